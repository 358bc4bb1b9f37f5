"""What a training checkpoint holds, and how a loop saves and restores it.

Tensors (safetensors): ``generator/*``, ``fake/*`` (trainable tensors), ``ema/*`` (generator EMA),
``optim_generator/*``, ``optim_fake/*`` (AdamW states), ``stage1_generator/*``, ``stage1_fake/*`` (stage 2
only: the frozen stage-1 result, so a stage-2 run is self-contained). JSON: stage, step, config fingerprint,
counters. There is no RNG state: every random draw is a function of (seed, step, sample index), see
:mod:`rtdmd.rng`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rtdmd.train.checkpoint import save_checkpoint
from rtdmd.train.ema import EMA
from rtdmd.train.optim import load_optimizer_tensors, optimizer_tensors
from rtdmd.train.runs import load_into, role_tensors


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def training_tensors(backbone, ema: EMA, optimizers: Mapping[str, torch.optim.Optimizer],
                     extra: Mapping[str, Mapping[str, Tensor]] = {}) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for role, optimizer in optimizers.items():
        params = backbone.trainable(role)
        out.update(prefixed(role, {k: p.detach() for k, p in params.items()}))
        out.update(prefixed(f"optim_{role}", optimizer_tensors(optimizer, list(params))))
    out.update(prefixed("ema", ema.state_dict()))
    for prefix, tensors in extra.items():
        out.update(prefixed(prefix, tensors))
    return out


def restore_training(tensors: Mapping[str, Tensor], backbone, ema: EMA,
                     optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
    for role, optimizer in optimizers.items():
        params = backbone.trainable(role)
        load_into(params, role_tensors(dict(tensors), role), role)
        load_optimizer_tensors(optimizer, list(params), role_tensors(dict(tensors), f"optim_{role}"))
    ema.load_state_dict(role_tensors(dict(tensors), "ema"))


def write(run_dir: Path, step: int, tensors: Mapping[str, Tensor], state: Mapping[str, Any], is_main: bool) -> None:
    if is_main:
        save_checkpoint(Path(run_dir) / "checkpoints", step, tensors, dict(state, step=step))
