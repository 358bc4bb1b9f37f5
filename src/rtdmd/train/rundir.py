"""Run directories: what a run writes besides its checkpoints, and the checks that keep one run in one folder.

    RUN/config.yaml          the resolved configuration (with every preset default filled in)
    RUN/run.json             stage ("distill" or "align"), "finished" (true once the last iteration is done;
                             false while it runs, after a signal stopped it or an error ended it), the step
                             reached, "stopped_by" (a signal's name) and, for stage 2, the stage-1 checkpoint it
                             started from ("from", "from_checkpoint", "from_step", "from_sha256")
    RUN/metrics.jsonl        one record per logged step
    RUN/rtdmd.lock           while a process trains into it (see :mod:`rtdmd.train.lock`)
    RUN/checkpoints/...      see :mod:`rtdmd.train.checkpoint`

Every check here reads files only: it runs before any model loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from torch import Tensor

from rtdmd.config import Config, dump_config, resolve, strict
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import (
    STATE,
    checkpoint_digest,
    checkpoint_dirs,
    clean_leftovers,
    damaged_summary,
    is_complete,
    load_checkpoint,
    parse_checkpoint_name,
    select_checkpoint,
    write_atomic,
)
from rtdmd.train.lock import holder_if_running
from rtdmd.train.state import unprefixed

# Keys of a stage section that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = {"iterations", "checkpoint_every", "log_every"}
COMMAND = {"distill": "rtdmd distill", "align": "rtdmd align"}


def stage_fingerprint(config: Config, stage: str) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes (or continues) from it."""
    section = {k: v for k, v in strict.to_dict(getattr(config, stage)).items() if k not in RESUMABLE_CHANGES}
    return {"model": config.fingerprint("world", "backbone"), "rewards": config.fingerprint("rewards", "preset", "beta"),
            "stage": section, "seed": config.run.seed}


def prepare_run_dir(run_dir: Path, config: Config, stage: str, resume: bool, is_main: bool,
                    extra: dict[str, Any] | None = None) -> Path | None:
    """Check ``run_dir`` (owned by this job: see :class:`rtdmd.train.session.Session`) and, on the main rank,
    write its config and record; returns the checkpoint to resume from (None for a fresh start)."""
    run_dir = Path(run_dir)
    check_run_dir_path(run_dir)
    root = run_dir / "checkpoints"
    checkpoint = _resume_checkpoint(run_dir, config, stage) if resume else _fresh(run_dir)
    if is_main:
        clean_leftovers(root)
        if checkpoint is None and (run_dir / "metrics.jsonl").exists():
            print(f"rtdmd: note: {run_dir} holds a run that stopped before its first checkpoint; starting afresh "
                  "(its metrics.jsonl is replaced)", flush=True)
        record = {"stage": stage, **(extra or {}), "finished": False}
        try:
            write_atomic(run_dir / "config.yaml", dump_config(config).encode("utf-8"))
            write_atomic(run_dir / "run.json", json.dumps(record, indent=1).encode("utf-8"))
        except OSError as err:
            raise UserError(f"cannot write the run directory {run_dir} ({err.strerror}): choose another "
                            "--out") from None
    return checkpoint


def check_run_dir_path(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a run directory: choose another --out")
    for name in ("checkpoints", "config.yaml", "run.json", "metrics.jsonl"):
        path = run_dir / name
        if path.exists() and path.is_dir() != (name == "checkpoints"):
            kind = "folder" if path.is_dir() else "file"
            raise UserError(f"{path} is a {kind}, which a run directory never holds there: remove it or choose "
                            "another --out")


def _fresh(run_dir: Path) -> None:
    """A fresh start needs a folder without checkpoints (complete or damaged: either is someone's run)."""
    dirs = checkpoint_dirs(run_dir / "checkpoints")
    if not dirs:
        return None
    if not any(is_complete(p) for p in dirs):
        raise UserError(f"{run_dir} holds only damaged checkpoints ({damaged_summary(run_dir / 'checkpoints')}): use "
                        f"another --out, or delete {run_dir / 'checkpoints'} to start afresh there")
    raise UserError(f"{run_dir} already holds checkpoints (newest: {dirs[-1].name}): pass --resume to continue it "
                    "or --out NEW_DIR")


def _resume_checkpoint(run_dir: Path, config: Config, stage: str) -> Path:
    root = run_dir / "checkpoints"
    dirs = checkpoint_dirs(root)
    if not dirs:
        why = " (the run stopped before its first checkpoint)" if (run_dir / "metrics.jsonl").exists() else ""
        raise UserError(f"--resume: no checkpoint in {run_dir}{why}; start afresh without --resume")
    if not any(is_complete(p) for p in dirs):
        raise UserError(f"--resume: every checkpoint in {root} is damaged ({damaged_summary(root)}): restore them "
                        f"from a copy, or start afresh with another --out")
    try:
        checkpoint = select_checkpoint(root, option=None)
    except UserError as err:
        raise UserError(f"--resume: {err}") from None
    state = read_state(checkpoint)
    if state.get("stage") != stage:
        other = state.get("stage")
        raise UserError(f"--resume: {run_dir} holds a run of '{COMMAND.get(other, other)}', not of '{COMMAND[stage]}': "
                        f"resume it with that command, or use another --out")
    if state.get("fingerprint") != stage_fingerprint(config, stage):
        raise UserError(f"--resume: {_mismatch(run_dir, config, stage)}")
    return checkpoint


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The JSON state of a verified checkpoint (no tensors read)."""
    return json.loads((Path(checkpoint) / STATE).read_text())


# -- the keys that differ from a run's own configuration ------------------------------------------------------

def fingerprinted(config: Config, stage: str) -> dict[str, Any]:
    """The parts of a config that :func:`stage_fingerprint` covers, as plain data."""
    data = strict.to_dict(config)
    section = {k: v for k, v in data[stage].items() if k not in RESUMABLE_CHANGES}
    return {"world": data["world"], "backbone": data["backbone"], "rewards": data["rewards"],
            "preset": data["preset"], "beta": data["beta"], stage: section, "run.seed": config.run.seed}


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` pairs; lists of scalars stay whole (a step list is one value)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{i}")
    else:
        yield prefix, value


def differing_keys(old: Config, new: Config, stage: str) -> list[str]:
    """``key: old -> new`` for every key that keeps ``new`` from continuing a checkpoint of ``old``."""
    a, b = dict(_flatten(fingerprinted(old, stage))), dict(_flatten(fingerprinted(new, stage)))
    missing = "(unset)"
    return [f"{key}: {a.get(key, missing)} -> {b.get(key, missing)}"
            for key in sorted(a.keys() | b.keys()) if a.get(key, missing) != b.get(key, missing)]


def _mismatch(run_dir: Path, config: Config, stage: str) -> str:
    try:
        saved, _ = read_run_config(run_dir)
        keys = differing_keys(saved, config, stage)
    except UserError:
        keys = []
    fix = (f"resume with its own configuration ({COMMAND[stage]} {run_dir / 'config.yaml'} --resume; iterations, "
           f"checkpoint_every, log_every and run.* may change) or use another --out")
    if not keys:
        return (f"the checkpoint in {run_dir} comes from another configuration (world, backbone, rewards or {stage} "
                f"settings differ): {fix}")
    return f"the configuration differs from the one {run_dir} was trained with ({'; '.join(keys)}): {fix}"


# -- reading runs ----------------------------------------------------------------------------------------------

def read_run_config(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    """The resolved config of a run and its ``run.json`` (stage, origin, finished)."""
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


def mark_finished(run_dir: Path, finished: bool, step: int, stopped_by: str | None = None) -> None:
    """Record in ``run.json`` how the run ended (main rank; atomic)."""
    path = Path(run_dir) / "run.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    info.update(finished=finished, step=step)
    info.pop("stopped_by", None)
    if stopped_by is not None:
        info["stopped_by"] = stopped_by
    write_atomic(path, json.dumps(info, indent=1).encode("utf-8"))


def finished(run_dir: Path, config: Config, info: dict[str, Any]) -> bool:
    """Did the run end its last iteration? ``run.json`` says; a run written before it did is judged by its
    newest checkpoint's step against the configured iterations."""
    if "finished" in info:
        return bool(info["finished"])
    stage_cfg = config.align if info["stage"] == "align" else config.distill
    dirs = checkpoint_dirs(Path(run_dir) / "checkpoints")
    try:
        return bool(dirs) and int(read_state(dirs[-1]).get("step", -1)) >= stage_cfg.iterations
    except (OSError, ValueError):
        return False


class Stage1(NamedTuple):
    """Where a stage-2 run starts: the stage-1 config, the checkpoint whose stage-1 tensors it loads, and the
    record of the origin that goes into its ``run.json``."""

    config: Config
    checkpoint: Path
    origin: dict[str, Any]


def check_stage1(from_dir: Path, config: Config, run_dir: Path | None = None, resume: bool = False, *,
                 from_checkpoint: str | None = None, allow_unfinished: bool = False) -> Stage1:
    """The stage-1 run a stage-2 run starts from (no tensors loaded): the same world and backbone, a finished
    run (unless ``allow_unfinished``), an intact checkpoint (the newest, or ``from_checkpoint``). A resumed
    stage-2 run continues from the stage-1 tensors stored in its own checkpoint, and its ``--from`` must be the
    one it started from."""
    from_dir = Path(from_dir)
    stage1_config, info = read_run_config(from_dir)
    if info.get("stage") != "distill":
        raise UserError(f"--from {from_dir} is a stage-2 run: pass the run directory of 'rtdmd distill'")
    if stage1_config.fingerprint("world", "backbone") != config.fingerprint("world", "backbone"):
        raise UserError(f"--from {from_dir} was trained with another world or backbone: use the same world and "
                        f"backbone sections as its config.yaml")
    if resume and run_dir is not None:
        resumed = _resumed_origin(from_dir, Path(run_dir), from_checkpoint)
        if resumed is not None:
            return Stage1(stage1_config, *resumed)
    checkpoint = select_checkpoint(from_dir / "checkpoints", from_checkpoint, option="--from-checkpoint")
    if checkpoint is None:
        raise UserError(f"--from {from_dir} holds no checkpoint yet: let its 'rtdmd distill' run write one")
    if not allow_unfinished and not finished(from_dir, stage1_config, info):
        raise UserError(f"--from {from_dir} did not finish ({_unfinished(from_dir, stage1_config, info)}): continue "
                        f"it with 'rtdmd distill {from_dir / 'config.yaml'} --out {from_dir} --resume', or pass "
                        f"--allow-unfinished to start from its checkpoint {checkpoint.name} anyway")
    origin = {"from": str(from_dir.resolve()), "from_checkpoint": checkpoint.name,
              "from_step": int(read_state(checkpoint)["step"]), "from_sha256": checkpoint_digest(checkpoint)}
    return Stage1(stage1_config, checkpoint, origin)


def _unfinished(from_dir: Path, config: Config, info: dict[str, Any]) -> str:
    holder = holder_if_running(from_dir)
    if holder is not None:
        return f"it is still running: PID {holder.get('pid')} on {holder.get('host')}"
    step, total = info.get("step"), config.distill.iterations
    how = f"stopped by {info['stopped_by']}" if info.get("stopped_by") else "stopped"
    return f"{how} after step {step} of {total}" if step is not None else f"it ended before its {total} iterations"


def _resumed_origin(from_dir: Path, run_dir: Path, from_checkpoint: str | None) -> tuple[Path, dict] | None:
    """On ``align --resume``: this run's own newest checkpoint (which stores the stage-1 tensors it started
    from) and its recorded origin; None when there is nothing to resume (the session then says so)."""
    try:
        own = select_checkpoint(run_dir / "checkpoints", option=None)
        _, info = read_run_config(run_dir)
    except UserError:
        return None  # the session reports a damaged or missing run with its own words
    if own is None or info.get("stage") != "align":
        return None
    origin = {k: v for k, v in info.items() if k.startswith("from")}
    recorded = origin.get("from")
    if recorded is not None and Path(recorded) != from_dir.resolve():
        raise UserError(f"--resume: {run_dir} started from the stage-1 run {recorded}, not from --from {from_dir}: "
                        f"pass --from {recorded}")
    if from_checkpoint is not None and parse_checkpoint_name(from_checkpoint) != origin.get("from_step"):
        raise UserError(f"--resume: {run_dir} started from {origin.get('from_checkpoint')} of its stage-1 run, not "
                        f"from --from-checkpoint {from_checkpoint}: drop --from-checkpoint")
    return own, origin


def load_stage1(checkpoint: Path) -> dict[str, dict[str, Tensor]]:
    """The stage-1 result a stage-2 run starts from, its EMA generator and its fake score, in host memory (copied
    into the model once, and otherwise only written to this run's checkpoints). ``checkpoint`` is a stage-1
    checkpoint, or (when resuming) a stage-2 one, which stores the stage-1 tensors it started from."""
    tensors, state = load_checkpoint(checkpoint, "cpu")
    if state.get("stage") == "align":
        return {"stage1_generator": unprefixed(tensors, "stage1_generator"),
                "stage1_fake": unprefixed(tensors, "stage1_fake")}
    return {"stage1_generator": unprefixed(tensors, "ema"), "stage1_fake": unprefixed(tensors, "fake")}
