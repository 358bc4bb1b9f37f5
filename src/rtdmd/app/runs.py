"""Loading a finished (or interrupted) run: its config and a backbone holding the generator of one checkpoint,
for generation, evaluation and export.

:func:`open_run` checks a run without loading any model (its config, the checkpoint to use and its manifest), so
that a command can check everything else (its output path, its input files) before the minutes of loading;
:func:`load_run` then builds the model. The checkpoint is the newest one, or the one asked for
(``--checkpoint step_N``); a damaged one is an error that names it and the intact ones, never a silent fallback.
Every output made from a run records :attr:`RunRef.provenance` (run, stage, step, checkpoint and its hash)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rtdmd.config import Config
from rtdmd.devices import resolve_device
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import checkpoint_digest, load_checkpoint, select_checkpoint
from rtdmd.train.components import Components, build_components
from rtdmd.train.parallel import load_into
from rtdmd.train.rundir import read_run_config, read_state
from rtdmd.train.state import unprefixed


@dataclass(frozen=True)
class RunRef:
    """A run directory and the checkpoint of it to use, checked, no model loaded."""

    run_dir: Path
    config: Config
    stage: str
    checkpoint: Path
    step: int
    digest: str  # sha256 of the checkpoint's manifest
    finished: bool | None  # run.json's record (None: a run written before it was recorded)

    @property
    def stage_config(self):
        """The stage section the generator was trained with (its step list and eta)."""
        return self.config.align if self.stage == "align" else self.config.distill

    @property
    def provenance(self) -> dict[str, Any]:
        """What every output made from this checkpoint records."""
        return {"run": str(self.run_dir), "stage": self.stage, "step": self.step, "checkpoint": self.checkpoint.name,
                "checkpoint_sha256": self.digest, "run_finished": self.finished}


@dataclass
class LoadedRun:
    config: Config
    stage: str
    step: int
    components: Components
    ref: RunRef | None = None

    @property
    def stage_config(self):
        """The stage section the generator was trained with (its step list and eta)."""
        return self.config.align if self.stage == "align" else self.config.distill

    @property
    def provenance(self) -> dict[str, Any]:
        return self.ref.provenance if self.ref is not None else {"stage": self.stage, "step": self.step}


def open_run(run_dir: Path, checkpoint: str | None = None) -> RunRef:
    """The run's config and its checkpoint (the newest, or ``checkpoint`` = ``step_N``), checked against the
    manifest; no model is loaded."""
    run_dir = Path(run_dir)
    config, info = read_run_config(run_dir)
    chosen = select_checkpoint(run_dir / "checkpoints", checkpoint, option="--checkpoint")
    if chosen is None:
        raise UserError(f"{run_dir} holds no checkpoint yet: its run stopped before the first one (continue it with "
                        f"--resume, or wait for checkpoint_every steps)")
    state = read_state(chosen)
    return RunRef(run_dir, config, info["stage"], chosen, int(state["step"]), checkpoint_digest(chosen),
                  info.get("finished"))


def restore_backbone(backbone, tensors: Mapping[str, Tensor], stage: str, use_ema: bool = True) -> None:
    """Load a checkpoint's weights into a freshly built backbone (the generator from its EMA if ``use_ema``)."""
    if stage == "align":
        load_into(backbone.trainable("generator"), unprefixed(tensors, "stage1_generator"), "stage-1 generator")
        load_into(backbone.trainable("fake"), unprefixed(tensors, "stage1_fake"), "stage-1 fake")
        backbone.start_stage2()
    load_into(backbone.trainable("generator"), unprefixed(tensors, "ema" if use_ema else "generator"), "generator")
    load_into(backbone.trainable("fake"), unprefixed(tensors, "fake"), "fake")


def load_run(run: Path | RunRef, device: torch.device | str = "cpu", use_ema: bool = True) -> LoadedRun:
    """A run's config and components, the backbone holding its checkpoint's generator (``run``: a run directory,
    whose newest checkpoint is used, or the result of :func:`open_run`)."""
    ref = run if isinstance(run, RunRef) else open_run(run)
    tensors, _ = load_checkpoint(ref.checkpoint)
    components = build_components(ref.config, resolve_device(str(device)))
    restore_backbone(components.backbone, tensors, ref.stage, use_ema)
    return LoadedRun(ref.config, ref.stage, ref.step, components, ref)
