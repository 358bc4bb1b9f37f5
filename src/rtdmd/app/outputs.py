"""Output paths, checked before any model loads: a command that would fail to write its result after minutes of
loading and sampling fails in a second instead, with one line.

A folder output (images, an export, the comparison table) must be a folder, or not exist yet, and be new or empty
when its writer would otherwise mix its files with older ones; a file output must not be a folder. Either way the
folder must be writable: it is created and a probe file is written and removed (permission bits alone do not
say, e.g. for root or on a read-only mount)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rtdmd.errors import UserError


def check_output_dir(path: Path, *, option: str = "--out", empty: bool = True) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file: give a folder (new{' or empty' if empty else ''})")
    if empty and path.is_dir() and any(path.iterdir()):
        raise UserError(f"{option} {path} is not empty: choose a new folder or empty it (this command would mix its "
                        "files with the ones there)")
    _probe(path, option)
    return path


def check_output_file(path: Path, *, option: str = "--out") -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder: give a file name (e.g. {path / 'result.json'})")
    _probe(path.parent, option)
    return path


def _probe(folder: Path, option: str) -> None:
    above = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{option}: {above} is a file, so nothing can be written under it: choose another {option}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".rtdmd_probe_")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UserError(f"{option}: cannot write to {folder} ({err.strerror}): choose another {option}") from None
