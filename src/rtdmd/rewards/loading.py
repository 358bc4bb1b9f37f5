"""Loading a reward's weights: where its files live, and reading them safely.

A reward's files are in the config's ``path``, else in ``$RTDMD_REWARDS_ROOT/<kind>/``. A missing file is a
one-line :class:`UserError` naming the files and where they are published; nothing is downloaded unless the
config says ``allow_download: true`` (then the files go into that same folder, so the next run is offline).
Weights are read from safetensors or with ``torch.load(weights_only=True)``, never as pickled code; what an
evaluation records about a scorer (its weights' hashes) is a :class:`ScorerInfo`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rtdmd.errors import UserError

ROOT_ENV = "RTDMD_REWARDS_ROOT"


@dataclass(frozen=True)
class Need:
    """One file a reward needs. ``names`` are alternatives; a tuple alternative ``("a", "b")`` needs both."""

    what: str  # e.g. "CLIP ViT-L/14 weights"
    names: tuple[str | tuple[str, ...], ...]
    source: str  # where it is published, for the error message (a Hugging Face repo id or a URL)
    repo: str | None = None  # Hugging Face repo to fetch from when allow_download
    fetch: tuple[str | tuple[str, ...], ...] = ()  # files to fetch from ``repo``; a tuple: the first that exists

    def present(self, folder: Path) -> bool:
        return any(all((folder / part).is_file() for part in _parts(name)) for name in self.names)

    def describe(self) -> str:
        names = " or ".join(" + ".join(_parts(n)) for n in self.names)
        return f"{self.what} ({names}; published at {self.source})"


def _parts(name: str | tuple[str, ...]) -> tuple[str, ...]:
    return (name,) if isinstance(name, str) else tuple(name)


def reward_folder(kind: str, path: str | None) -> Path:
    """``path`` if given, else ``$RTDMD_REWARDS_ROOT/<kind>``."""
    if path:
        return Path(path).expanduser()
    root = os.environ.get(ROOT_ENV)
    if not root:
        raise UserError(f"reward '{kind}' needs its weights: set its 'path' to a local folder, or set {ROOT_ENV} "
                        f"to a folder that holds '{kind}/' (see docs/rewards.md)")
    return Path(root).expanduser() / kind


def locate(kind: str, folder: Path, needs: Sequence[Need], allow_download: bool) -> Path:
    """Check that ``folder`` holds every need (fetching the missing ones if allowed); return the folder."""
    missing = [n for n in needs if not n.present(folder)]
    if missing and allow_download:
        for need in missing:
            _download(need, folder)
        missing = [n for n in needs if not n.present(folder)]
    if missing:
        hint = "" if allow_download else ", or set allow_download: true"
        raise UserError(f"reward '{kind}': {folder} lacks " + "; ".join(n.describe() for n in missing)
                        + f": put the files there, point the reward's 'path' elsewhere{hint}")
    return folder


def _download(need: Need, folder: Path) -> None:
    if need.repo is None:
        return
    from huggingface_hub import hf_hub_download

    folder.mkdir(parents=True, exist_ok=True)
    for item in need.fetch:
        alternatives = _parts(item)
        for i, name in enumerate(alternatives):
            try:
                hf_hub_download(need.repo, name, local_dir=str(folder))
                break
            except Exception as err:  # network, authentication, missing file: all are the user's to fix
                if i == len(alternatives) - 1:
                    raise UserError(f"could not download {' or '.join(alternatives)} from {need.repo}: "
                                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so that re-hashing multi-GB weights happens once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def weight_files(folder: Path) -> list[Path]:
    """The weight files transformers loads from a model folder (what identifies a scorer's version): the
    safetensors file, else the shards of a safetensors index, else ``pytorch_model.bin``."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        return [index, *(folder / s for s in shards)]
    return [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file() else []


@dataclass
class ScorerInfo:
    """What an evaluation summary records about a scorer: its kind, its definition and its weights' hashes."""

    kind: str
    definition: str
    files: tuple[Path, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from rtdmd import __version__

        return {"kind": self.kind, "definition": self.definition, "rtdmd_version": __version__,
                "weights_sha256": {p.name: file_sha256(p) for p in self.files}, **self.extra}


def load_weights(file: Path):
    """What a weights file holds: a ``.safetensors`` file, or anything else through ``torch.load`` with
    ``weights_only=True`` (never pickled code); an unreadable file is a one-line :class:`UserError`."""
    if Path(file).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{file} cannot be read as weights only ({type(err).__name__}): re-download it, or save "
                        "its state dict as .safetensors") from None
