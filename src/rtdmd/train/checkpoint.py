"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically with a manifest.

Layout: ``RUN/checkpoints/step_00001000/{tensors.safetensors, state.json, manifest.json}``. A checkpoint is
written into a temporary directory, every file is flushed and fsync'ed, the manifest (sha256 of each file) is
written last, and the directory is renamed into place; ``RUN/checkpoints/LATEST`` names the newest one (for
people and tools; resuming takes the highest complete step). A crash at any point leaves either the previous or
the new checkpoint complete, never a half-written one; loading verifies the manifest and falls back to the
newest complete checkpoint; the next save removes the leftovers of a crashed one.

Only rank 0 writes. The tensors are full (FSDP shards are gathered before), so a checkpoint does not depend on
the number of processes that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from rtdmd.errors import UserError

TENSORS, STATE, MANIFEST, LATEST = "tensors.safetensors", "state.json", "manifest.json", "LATEST"

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


def save_checkpoint(root: Path, step: int, tensors: Mapping[str, Tensor], state: Mapping[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; keep the newest ``keep`` (0: all)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    for leftover in root.glob(".tmp_step_*"):  # of this save, or of a crashed one
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(contiguous, str(tmp / TENSORS))
    with open(tmp / TENSORS, "rb+") as f:
        os.fsync(f.fileno())
    _fsync_write(tmp / STATE, json.dumps(state, indent=1, sort_keys=True).encode())
    _crash_point(step)
    manifest = {"step": step, "files": {name: _sha256(tmp / name) for name in (TENSORS, STATE)}}
    _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    _crash_point(step, ":renamed")
    _fsync_write(root / f".{LATEST}.tmp", final.name.encode())
    os.replace(root / f".{LATEST}.tmp", root / LATEST)
    _fsync_dir(root)
    if keep > 0:
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_complete(path: Path) -> bool:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        return all(_sha256(path / name) == digest for name, digest in manifest["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint of the highest step under ``root``, or None. (``LATEST`` may lag behind by one
    after a crash between the rename and its update, so it is not trusted.)"""
    for path in sorted(root.glob("step_*"), reverse=True):
        if path.is_dir() and is_complete(path):
            return path
    return None


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not is_complete(path):
        raise UserError(f"checkpoint {path} is incomplete or corrupted (manifest hash mismatch): resume from "
                        f"an earlier one or delete it")
    tensors = load_file(str(path / TENSORS), device=str(device))
    return tensors, json.loads((path / STATE).read_text())
