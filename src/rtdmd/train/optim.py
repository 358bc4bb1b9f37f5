"""AdamW per trained role, gradient clipping, and optimiser state as flat tensors for safetensors.

Parameters may be FSDP shards (DTensors): AdamW and ``clip_grad_norm_`` work on them as they are (the norm is
global), the saved state is gathered into full tensors and loaded back into this rank's shards."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from rtdmd.config import OptimConfig
from rtdmd.train.parallel import full_tensor, is_sharded, shard_like


def build_optimizer(params: Mapping[str, nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    # foreach: torch's default on CUDA, and on a CPU the same bits as the per-tensor loop at about half its cost
    # for hundreds of small adapter tensors.
    return torch.optim.AdamW(list(params.values()), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, foreach=True)


def clip_and_step(optimizer: torch.optim.Optimizer, params: Mapping[str, nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (if ``max_norm > 0``), take the step, zero the gradients.
    Returns the norm before clipping; a non-finite norm skips the step."""
    grads = [p for p in params.values() if p.grad is not None]
    norm = 0.0
    if grads:
        norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else math.inf)))
    if math.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Tensor]:
    """``{"<param name>/<state key>": tensor}`` for every per-parameter state entry, as full tensors (gathering
    FSDP shards is a collective: call it on every rank)."""
    state = optimizer.state_dict()["state"]
    return {f"{names[i]}/{key}": full_tensor(torch.as_tensor(value))
            for i, entries in sorted(state.items()) for key, value in sorted(entries.items())}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str], tensors: Mapping[str, Tensor]) -> None:
    full = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, name in enumerate(names):
        entries = {key.rsplit("/", 1)[1]: value for key, value in tensors.items() if key.rsplit("/", 1)[0] == name}
        if entries:
            # Moment estimates have the parameter's shape: this rank's shard of them under FSDP.
            state[i] = {key: shard_like(value, params[i]) if is_sharded(params[i]) and value.shape == params[i].shape
                        else value for key, value in entries.items()}
    full["state"] = state
    optimizer.load_state_dict(full)
