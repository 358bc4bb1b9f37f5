"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically with a manifest.

Layout: ``RUN/checkpoints/step_00001000/{tensors.safetensors, state.json, manifest.json}``. A checkpoint is
written into a temporary directory of the writing process (``.tmp_step_00001000_<pid>``), every file is flushed
and fsync'ed, the manifest (size and sha256 of each file) is written last, and the directory is renamed into
place; ``RUN/checkpoints/LATEST`` names the newest one (for people and tools). A crash at any point leaves
either the previous or the new checkpoint complete, never a half-written ``step_*`` folder, so a ``step_*``
folder that fails its manifest was damaged afterwards (a flipped bit, a truncated copy, a deleted file).

Selection never guesses (:func:`select_checkpoint`): the newest ``step_*`` folder is the checkpoint of a run; if
it is damaged, or ``LATEST`` names a newer one that is gone, that is an error naming it and the intact older
ones, which can be asked for by name. Pruning keeps
the newest ``keep`` *complete* checkpoints; it never deletes the one just written, a newer one, or a damaged one.

The hash of a checkpoint (:func:`checkpoint_digest`) is the sha256 of its manifest, which holds the sha256 of
every file: outputs made from a checkpoint record it.

Only rank 0 writes, and only while it owns the run directory (:mod:`rtdmd.train.lock`). The tensors are full
(FSDP shards are gathered before), so a checkpoint does not depend on the number of processes that wrote it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from rtdmd.errors import UserError

TENSORS, STATE, MANIFEST, LATEST = "tensors.safetensors", "state.json", "manifest.json", "LATEST"
STEP_DIR = re.compile(r"step_(\d+)")
TMP_PREFIX = ".tmp_step_"

# Test hook, used by tests/train/test_preemption.py only: "STEP" kills this process with SIGKILL while checkpoint
# STEP is half written (files in the temporary directory, no manifest); "STEP:renamed" kills it after the
# rename, before LATEST is updated.
CRASH_HOOK = "RTDMD_TEST_SIGKILL_IN_CHECKPOINT"


def _crash_point(step: int, where: str = "") -> None:
    if os.environ.get(CRASH_HOOK) == f"{step}{where}":
        os.kill(os.getpid(), signal.SIGKILL)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once (a temporary file of this process, fsync, rename): readers and
    crashes see the old content or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _fsync_write(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


# -- finding and checking checkpoints -------------------------------------------------------------------------

def step_of(path: Path) -> int | None:
    match = STEP_DIR.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_dirs(root: Path) -> list[Path]:
    """The ``step_*`` folders under ``root``, oldest first (by step number, whatever the zero padding)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if step_of(p) is not None and p.is_dir()]
    return sorted(found, key=step_of)


def problem(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (None: it is complete and matches its manifest)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        sizes = manifest.get("sizes", {})
    except FileNotFoundError:
        return f"it has no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its {MANIFEST} is damaged"
    for name, digest in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if name in sizes and size != sizes[name]:
            return f"{name} is truncated or overwritten ({size} bytes, the manifest says {sizes[name]})"
        if _sha256(file) != digest:
            return f"{name} does not match its sha256 in the manifest"
    return None


def is_complete(path: Path) -> bool:
    return problem(path) is None


def checkpoint_digest(path: Path) -> str:
    """The checkpoint's hash: the sha256 of its manifest (which holds the sha256 of every file)."""
    return _sha256(Path(path) / MANIFEST)


def parse_checkpoint_name(name: str) -> int:
    """``step_00000004``, ``step_4`` or ``4`` -> 4 (what ``--checkpoint`` accepts)."""
    text = Path(str(name)).name
    match = STEP_DIR.fullmatch(text) or re.fullmatch(r"(\d+)", text)
    if match is None:
        raise UserError(f"--checkpoint {name!r} is not a checkpoint name: give step_N (e.g. step_00000004) or N")
    return int(match.group(1))


def _intact_note(root: Path, damaged: Path, option: str | None) -> str:
    """The choices left when a checkpoint is damaged: the newest intact other one, or none."""
    others = [p for p in reversed(checkpoint_dirs(root)) if p.name != damaged.name]
    intact = next((p for p in others if is_complete(p)), None)
    if intact is None:
        return f"no intact checkpoint is left in {root}: restore it from a copy of the run"
    how = (f"pass {option} {intact.name} to use it" if option else
           f"move the damaged one out of {root} to continue from it")
    return f"the newest intact one is {intact.name}: {how}"


def select_checkpoint(root: Path, name: str | int | None = None, option: str | None = "--checkpoint") -> Path | None:
    """The checkpoint to use under ``root``: ``name`` if given, else the newest ``step_*`` folder; None when
    there is none. A damaged choice is a one-line error naming it and the choices (``option`` is the flag that
    picks another one; None: moving the damaged folder away is the way)."""
    root = Path(root)
    dirs = checkpoint_dirs(root)
    if name is not None:
        step = parse_checkpoint_name(name) if not isinstance(name, int) else name
        chosen = next((p for p in dirs if step_of(p) == step), None)
        if chosen is None:
            have = ", ".join(p.name for p in dirs) or "none"
            raise UserError(f"{option or 'checkpoint'} {name}: no such checkpoint in {root} (there: {have})")
    elif not dirs:
        return None
    else:
        chosen = dirs[-1]
        _check_latest(root, chosen, option)
    trouble = problem(chosen)
    if trouble is not None:
        raise UserError(f"checkpoint {chosen} is damaged ({trouble}); {_intact_note(root, chosen, option)}")
    return chosen


def _check_latest(root: Path, newest: Path, option: str | None) -> None:
    """``LATEST`` may lag one checkpoint behind (a crash between the rename and its update) but never ahead: if
    it names a newer step than any folder, that folder was removed, and the newest present is not the run's."""
    try:
        named = (root / LATEST).read_text().strip()
    except OSError:
        return
    step = step_of(Path(named))
    if step is None or step <= step_of(newest):
        return
    how = (f"pass {option} {newest.name} to use it" if option else
           f"write {newest.name} into {root / LATEST} to continue from it")
    raise UserError(f"{root / LATEST} names {named}, which is missing (removed?); the newest checkpoint present is "
                    f"{newest.name}: {how}")


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` (None if there is none); an error if it is damaged."""
    return select_checkpoint(root)


def damaged_summary(root: Path) -> str:
    """``step_2 (it has no manifest.json), step_4 (...)`` for every checkpoint folder under ``root``."""
    return ", ".join(f"{p.name} ({problem(p) or 'intact'})" for p in checkpoint_dirs(root))


def load_checkpoint(path: Path, device: torch.device | str = "cpu",
                    verify: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON state of the checkpoint folder ``path`` (checked against its manifest unless the
    caller has just done so)."""
    trouble = problem(path) if verify else None
    if trouble is not None:
        raise UserError(f"checkpoint {path} is damaged ({trouble}): choose another one or restore it from a copy")
    tensors = load_file(str(Path(path) / TENSORS), device=str(device))
    return tensors, json.loads((Path(path) / STATE).read_text())


# -- writing ---------------------------------------------------------------------------------------------------

def clean_leftovers(root: Path) -> None:
    """Remove the temporary folders of crashed saves. Only the owner of the run directory calls it (when it takes
    the run over): every earlier writer is gone by then, and no other process may write here."""
    for leftover in Path(root).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(root: Path, step: int, tensors: Mapping[str, Tensor], state: Mapping[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; keep the newest ``keep`` complete ones (0: all).
    A write that fails (a full disk, a read-only mount) removes its temporary folder and ends in one line; the
    checkpoints written before are untouched."""
    root = Path(root)
    final = root / f"step_{step:08d}"
    tmp = root / f"{TMP_PREFIX}{step:08d}_{os.getpid()}"  # this process's own: nobody else touches it
    placed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_files(tmp, step, tensors, state)
        _move_into_place(tmp, final)
        placed = True
        _crash_point(step, ":renamed")
        write_atomic(root / LATEST, final.name.encode())
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(root, final, err, placed) from None
    if keep > 0:
        prune(root, keep, final)
    return final


def _save_tensors(tensors: Mapping[str, Tensor], path: Path) -> None:
    """safetensors' writer, whose I/O failures (a full disk) are its own exception type: made an OSError."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        save_file(contiguous, str(path))
    except SafetensorError as err:
        code = re.search(r"os error (\d+)", str(err))
        number = int(code.group(1)) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from None


def _write_files(tmp: Path, step: int, tensors: Mapping[str, Tensor], state: Mapping[str, Any]) -> None:
    _save_tensors(tensors, tmp / TENSORS)
    with open(tmp / TENSORS, "rb+") as f:
        os.fsync(f.fileno())
    _fsync_write(tmp / STATE, json.dumps(state, indent=1, sort_keys=True).encode())
    _crash_point(step)
    names = (TENSORS, STATE)
    manifest = {"step": step, "files": {n: _sha256(tmp / n) for n in names},
                "sizes": {n: (tmp / n).stat().st_size for n in names}}
    _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_dir(tmp)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; a folder of the same step (rewritten) is moved aside first and removed after,
    so that one complete copy exists at every moment."""
    aside = None
    if final.exists():
        aside = final.with_name(f"{TMP_PREFIX}{final.name}_replaced_{os.getpid()}")
        os.replace(final, aside)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _write_error(root: Path, final: Path, err: OSError, placed: bool) -> UserError:
    if placed:  # only LATEST failed: the checkpoint itself is complete
        return UserError(f"checkpoint {final} was written, but {root / LATEST} could not be updated "
                         f"({err.strerror}): fix the disk, then continue with --resume")
    before = [p for p in checkpoint_dirs(root) if step_of(p) < step_of(final)]
    kept = f"{before[-1].name}, the last checkpoint, is untouched" if before else "no earlier checkpoint exists"
    return UserError(f"cannot write checkpoint {final.name} in {root} ({err.strerror}); {kept}: free space (or "
                     f"make it writable), then continue with --resume")


def prune(root: Path, keep: int, newest: Path) -> None:
    """Delete the complete checkpoints older than the ``keep`` newest complete ones, counting ``newest`` (just
    written and verified by its writer). Never touched: ``newest``, anything newer (another run's, or one a
    resumed run will rewrite), and damaged folders (evidence, and never counted as kept)."""
    older = [p for p in checkpoint_dirs(root) if step_of(p) < step_of(newest)]
    kept = 1
    for path in reversed(older):
        if not is_complete(path):
            continue
        if kept < keep:
            kept += 1
            continue
        shutil.rmtree(path, ignore_errors=True)
