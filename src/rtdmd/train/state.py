"""What a training checkpoint holds, and how a loop saves and restores it.

Tensors (safetensors, always full tensors: FSDP shards are gathered first, so a checkpoint does not depend on the
number of processes that wrote it and continues on any other): ``generator/*``, ``fake/*`` (trainable tensors),
``ema/*`` (generator EMA), ``optim_generator/*``, ``optim_fake/*`` (AdamW moments and step counts),
``stage1_generator/*``, ``stage1_fake/*`` (stage 2 only: the frozen stage-1 result, so a stage-2 run is
self-contained). JSON (``state.json``): stage, step, the config fingerprint a resume must match, the number of
processes that wrote it, ``skipped_steps`` (non-finite updates so far) and, in stage 2, ``updates`` (optimiser
steps, which schedule the EMA).

"Every RNG stream of every rank" is in it by construction, not by saving generator states: every random number
of training is a pure function of ``(run.seed, purpose, step, global sample index)`` (:mod:`rtdmd.rng`) -- the
initial noise, the step noise, SubGRPO's shared noise (keyed by group), the renoising levels; the few shared
scalars (stage 1's random stop, SubGRPO's subset, the prompt order) come from generators keyed by
``(seed, purpose, step)``. Rank ``r`` draws the rows of its slice of the global batch, so the step number alone
restores what every rank draws next, on any number of processes. Likewise the data position is the step: the
prompts of step ``k`` are drawn from the same keyed streams. Stage 2 keeps no running statistics (advantages are
normalised within each iteration's global batch), so the counters above are all the rest there is. (Random
initial weights, e.g. fresh LoRA adapters, are broadcast from rank 0 before training and saved like any weight.)
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
from rtdmd.train.parallel import full_tensor, reshard
from rtdmd.train.runs import load_into, role_tensors


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def training_tensors(backbone, ema: EMA, optimizers: Mapping[str, torch.optim.Optimizer],
                     extra: Mapping[str, Mapping[str, Tensor]] = {}) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    reshard(backbone)  # so that trainable() returns the FSDP shards, not a root's gathered copies
    for role, optimizer in optimizers.items():
        params = backbone.trainable(role)
        out.update(prefixed(role, {k: full_tensor(p) for k, p in params.items()}))
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
