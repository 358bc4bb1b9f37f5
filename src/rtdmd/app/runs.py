"""Loading a finished (or interrupted) run: its config and a backbone holding the generator of its latest
checkpoint, for generation, evaluation and export."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rtdmd.config import Config
from rtdmd.devices import resolve_device
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import latest_checkpoint, load_checkpoint
from rtdmd.train.components import Components, build_components
from rtdmd.train.parallel import load_into
from rtdmd.train.rundir import read_run_config
from rtdmd.train.state import unprefixed


@dataclass
class LoadedRun:
    config: Config
    stage: str
    step: int
    components: Components

    @property
    def stage_config(self):
        """The stage section the generator was trained with (its step list and eta)."""
        return self.config.align if self.stage == "align" else self.config.distill


def restore_backbone(backbone, tensors: Mapping[str, Tensor], stage: str, use_ema: bool = True) -> None:
    """Load a checkpoint's weights into a freshly built backbone (the generator from its EMA if ``use_ema``)."""
    if stage == "align":
        load_into(backbone.trainable("generator"), unprefixed(tensors, "stage1_generator"), "stage-1 generator")
        load_into(backbone.trainable("fake"), unprefixed(tensors, "stage1_fake"), "stage-1 fake")
        backbone.start_stage2()
    load_into(backbone.trainable("generator"), unprefixed(tensors, "ema" if use_ema else "generator"), "generator")
    load_into(backbone.trainable("fake"), unprefixed(tensors, "fake"), "fake")


def load_run(run_dir: Path, device: torch.device | str = "cpu", use_ema: bool = True) -> LoadedRun:
    """A run's config and components, the backbone holding the latest checkpoint's generator."""
    config, info = read_run_config(run_dir)
    checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    if checkpoint is None:
        raise UserError(f"{run_dir} holds no complete checkpoint yet")
    tensors, state = load_checkpoint(checkpoint)
    components = build_components(config, resolve_device(str(device)))
    restore_backbone(components.backbone, tensors, info["stage"], use_ema)
    return LoadedRun(config, info["stage"], int(state["step"]), components)
