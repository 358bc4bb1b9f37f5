"""Run directories: what a run writes besides its checkpoints, and the checks that keep one run in one folder.

    RUN/config.yaml          the resolved configuration (with every preset default filled in)
    RUN/run.json             stage ("distill" or "align") and, for stage 2, the stage-1 run it started from
    RUN/metrics.jsonl        one record per logged step
    RUN/checkpoints/...      see :mod:`rtdmd.train.checkpoint`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from rtdmd.config import Config, dump_config, resolve, strict
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import latest_checkpoint, load_checkpoint
from rtdmd.train.state import unprefixed

# Keys of a stage section that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = {"iterations", "checkpoint_every", "log_every"}


def stage_fingerprint(config: Config, stage: str) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes (or continues) from it."""
    section = {k: v for k, v in strict.to_dict(getattr(config, stage)).items() if k not in RESUMABLE_CHANGES}
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
    """The resolved config of a run and its ``run.json`` (stage, origin)."""
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


def check_stage1(from_dir: Path, config: Config) -> tuple[Config, Path]:
    """The config and the checkpoint of the stage-1 run a stage-2 run starts from (no tensors loaded)."""
    stage1_config, info = read_run_config(from_dir)
    if info.get("stage") != "distill":
        raise UserError(f"--from {from_dir} is a stage-2 run: pass the run directory of 'rtdmd distill'")
    if stage1_config.fingerprint("world", "backbone") != config.fingerprint("world", "backbone"):
        raise UserError(f"--from {from_dir} was trained with another world or backbone: use the same world and "
                        f"backbone sections as its config.yaml")
    checkpoint = latest_checkpoint(Path(from_dir) / "checkpoints")
    if checkpoint is None:
        raise UserError(f"--from {from_dir} holds no complete checkpoint")
    return stage1_config, checkpoint


def load_stage1(checkpoint: Path) -> dict[str, dict[str, Tensor]]:
    """The stage-1 result a stage-2 run starts from, its EMA generator and its fake score, in host memory (copied
    into the model once, and otherwise only written to this run's checkpoints)."""
    tensors, _ = load_checkpoint(checkpoint, "cpu")
    return {"stage1_generator": unprefixed(tensors, "ema"), "stage1_fake": unprefixed(tensors, "fake")}
