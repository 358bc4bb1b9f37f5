"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically with a manifest.

Layout: ``RUN/checkpoints/step_00001000/{tensors.safetensors, state.json, manifest.json}``. A checkpoint is
written into a temporary directory, every file is flushed and fsync'ed, the manifest (sha256 of each file) is
written last, and the directory is renamed into place; ``RUN/checkpoints/LATEST`` names the newest one.
A crash at any point leaves either the previous or the new checkpoint complete, never a half-written one;
loading verifies the manifest and falls back to the newest complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from rtdmd.errors import UserError

TENSORS, STATE, MANIFEST, LATEST = "tensors.safetensors", "state.json", "manifest.json", "LATEST"


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
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(contiguous, str(tmp / TENSORS))
    with open(tmp / TENSORS, "rb+") as f:
        os.fsync(f.fileno())
    _fsync_write(tmp / STATE, json.dumps(state, indent=1, sort_keys=True).encode())
    manifest = {"step": step, "files": {name: _sha256(tmp / name) for name in (TENSORS, STATE)}}
    _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
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
    """The newest complete checkpoint under ``root`` (``LATEST`` first, then by step), or None."""
    candidates = []
    pointer = root / LATEST
    if pointer.is_file():
        candidates.append(root / pointer.read_text().strip())
    candidates += sorted(root.glob("step_*"), reverse=True)
    for path in candidates:
        if path.is_dir() and is_complete(path):
            return path
    return None


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not is_complete(path):
        raise UserError(f"checkpoint {path} is incomplete or corrupted (manifest hash mismatch): resume from "
                        f"an earlier one or delete it")
    tensors = load_file(str(path / TENSORS), device=str(device))
    return tensors, json.loads((path / STATE).read_text())
