"""Run directories: building a run's components from its config, saving / checking the config, and loading
a finished run (config + backbone with the trained generator) for generation, evaluation and export.

    RUN/config.yaml          the resolved configuration (with every preset default filled in)
    RUN/run.json             stage ("distill" or "align") and, for stage 2, the stage-1 run it started from
    RUN/metrics.jsonl        one record per logged step
    RUN/checkpoints/...      see :mod:`rtdmd.train.checkpoint`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from rtdmd import configtools, registry
from rtdmd.config import Config, dump_config, resolve
from rtdmd.errors import UserError
from rtdmd.precision import torch_dtype
from rtdmd.rewards.base import RewardSet
from rtdmd.rewards.combine import build_reward_set
from rtdmd.train.checkpoint import latest_checkpoint, load_checkpoint

# Keys of a stage section that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = {"iterations", "checkpoint_every", "log_every"}


@dataclass
class Components:
    world: Any
    backbone: Any
    rewards: RewardSet


def build_components(config: Config, device: torch.device) -> Components:
    world = registry.builder("world", config.world.kind)(config.world)
    backbone = registry.builder("backbone", config.backbone.kind)(
        config.backbone, world=world, device=device, dtype=torch_dtype(config.run.dtype))
    return Components(world, backbone, build_reward_set(config.rewards, world=world, device=device))


def stage_fingerprint(config: Config, stage: str) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes (or continues) from it."""
    section = {k: v for k, v in configtools.to_dict(getattr(config, stage)).items() if k not in RESUMABLE_CHANGES}
    return {"model": config.fingerprint("world", "backbone"), "rewards": config.fingerprint("rewards", "preset", "beta"),
            "stage": section, "seed": config.run.seed}


def prepare_run_dir(run_dir: Path, config: Config, stage: str, resume: bool, is_main: bool,
                    extra: dict[str, Any] | None = None) -> Path | None:
    """Create or check ``run_dir``; returns the checkpoint to resume from (None for a fresh start)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a run directory: choose another --out")
    checkpoint = latest_checkpoint(run_dir / "checkpoints") if run_dir.exists() else None
    if checkpoint is not None and not resume:
        raise UserError(f"{run_dir} already holds checkpoints: pass --resume to continue it or --out NEW_DIR")
    if resume and checkpoint is None:
        if (run_dir / "checkpoints").exists():
            raise UserError(f"--resume: {run_dir}/checkpoints holds no complete checkpoint; start afresh without --resume")
        raise UserError(f"--resume: no checkpoint in {run_dir}; start afresh without --resume")
    if checkpoint is not None:
        _, state = load_checkpoint(checkpoint)
        if state.get("stage") != stage or state.get("fingerprint") != stage_fingerprint(config, stage):
            raise UserError(f"checkpoint {checkpoint} comes from another configuration (stage, world, backbone, "
                            f"rewards or {stage} settings differ): resume with its own config.yaml or use a new --out")
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_config(config))
            (run_dir / "run.json").write_text(json.dumps({"stage": stage, **(extra or {})}, indent=1))
        except OSError as err:
            raise UserError(f"cannot write the run directory {run_dir} ({err.strerror}): choose another --out") from None
    return checkpoint


def read_run_config(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir} is not an rtdmd run directory (no config.yaml / run.json): pass the --out of "
                        f"an 'rtdmd distill' or 'rtdmd align' run")
    try:
        config = resolve(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except UserError as err:
        raise UserError(f"{run_dir}/config.yaml: {err}") from None
    except (OSError, ValueError, yaml.YAMLError) as err:  # unreadable, not UTF-8, not YAML / JSON
        raise UserError(f"{run_dir} holds a damaged config.yaml or run.json ({type(err).__name__}): restore them "
                        f"from a copy of the run") from None
    if not isinstance(info, dict) or info.get("stage") not in ("distill", "align"):
        raise UserError(f"{run_dir}/run.json does not name the stage (distill or align): restore it from a copy")
    return config, info


def role_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


@torch.no_grad()
def load_into(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor], what: str) -> None:
    """Copy full tensors ``values`` into ``params`` (into this rank's shards when they are FSDP shards)."""
    from rtdmd.train.parallel import shard_like

    missing = sorted(set(params) - set(values))
    if missing:
        raise UserError(f"checkpoint lacks {len(missing)} {what} tensors (e.g. {missing[0]}): it was written for "
                        f"another backbone configuration")
    for name, p in params.items():
        if tuple(values[name].shape) != tuple(p.shape):
            raise UserError(f"checkpoint tensor {what} {name} has shape {list(values[name].shape)}, the model's has "
                            f"{list(p.shape)}: it was written for another backbone configuration")
        p.copy_(shard_like(values[name], p))


def restore_backbone(backbone, tensors: dict[str, torch.Tensor], stage: str, use_ema: bool = True) -> None:
    """Load a checkpoint's weights into a freshly built backbone (generator from its EMA if ``use_ema``)."""
    if stage == "align":
        load_into(backbone.trainable("generator"), role_tensors(tensors, "stage1_generator"), "stage-1 generator")
        load_into(backbone.trainable("fake"), role_tensors(tensors, "stage1_fake"), "stage-1 fake")
        backbone.start_stage2()
    load_into(backbone.trainable("generator"), role_tensors(tensors, "ema" if use_ema else "generator"), "generator")
    load_into(backbone.trainable("fake"), role_tensors(tensors, "fake"), "fake")


@dataclass
class LoadedRun:
    config: Config
    stage: str
    step: int
    components: Components


def load_run(run_dir: Path, device: torch.device | str = "cpu", use_ema: bool = True) -> LoadedRun:
    """A finished (or interrupted) run, its backbone holding the latest checkpoint's generator."""
    config, info = read_run_config(run_dir)
    checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    if checkpoint is None:
        raise UserError(f"{run_dir} holds no complete checkpoint yet")
    from rtdmd.train.parallel import resolve_device

    device = resolve_device(str(device))
    tensors, state = load_checkpoint(checkpoint)
    components = build_components(config, device)
    restore_backbone(components.backbone, tensors, info["stage"], use_ema)
    return LoadedRun(config, info["stage"], int(state["step"]), components)

