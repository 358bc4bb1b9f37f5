"""AdamW per trained role, gradient clipping, and optimiser state as flat tensors for safetensors."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from rtdmd.config import OptimConfig


def build_optimizer(params: Mapping[str, nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(params.values()), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


def clip_and_step(optimizer: torch.optim.Optimizer, params: Mapping[str, nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (if ``max_norm > 0``), take the step, zero the gradients.
    Returns the norm before clipping; a non-finite norm skips the step."""
    grads = [p for p in params.values() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else math.inf).item() if grads else 0.0
    if math.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Tensor]:
    """``{"<param name>/<state key>": tensor}`` for every per-parameter state entry."""
    state = optimizer.state_dict()["state"]
    return {f"{names[i]}/{key}": torch.as_tensor(value) for i, entries in state.items() for key, value in entries.items()}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str], tensors: Mapping[str, Tensor]) -> None:
    full = optimizer.state_dict()
    state = {}
    for i, name in enumerate(names):
        entries = {key.rsplit("/", 1)[1]: value for key, value in tensors.items() if key.rsplit("/", 1)[0] == name}
        if entries:
            state[i] = entries
    full["state"] = state
    optimizer.load_state_dict(full)
