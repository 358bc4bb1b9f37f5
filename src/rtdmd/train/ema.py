"""Exponential moving average of trainable tensors (fp32), updated once per optimiser step. With FSDP each rank
averages its own shards; ``state_dict`` gathers full tensors, ``load_state_dict`` takes full tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rtdmd.train.parallel import full_tensor, shard_like


class EMA:
    def __init__(self, params: Mapping[str, nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in params.items()}

    @torch.no_grad()
    def update(self, params: Mapping[str, nn.Parameter]) -> None:
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        """Full tensors (a collective under FSDP: call it on every rank)."""
        return {name: full_tensor(value) for name, value in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(shard_like(value, self.shadow[name]))

    @contextmanager
    def applied(self, params: Mapping[str, nn.Parameter]) -> Iterator[None]:
        """Temporarily load the EMA weights into ``params`` (e.g. to evaluate), restoring them afterwards."""
        backup = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(backup[name])
