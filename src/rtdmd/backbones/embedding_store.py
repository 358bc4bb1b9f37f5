"""Prompt embeddings on disk (``run.embedding_cache``), so that a run encodes each prompt once across runs and
can free its text encoders: one safetensors file per prompt in a folder named by a digest of what decides the
embedding (the text encoders' files, the family's encoder settings, the dtype).

Files are written to a temporary name and renamed into place, so a reader (another rank, another run) sees a
complete file or none; the prompt is stored in the file's metadata and checked on read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from rtdmd.errors import UserError


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def component_identity(folder: Path, names: list[str]) -> dict[str, Any]:
    """What identifies the components ``names`` of a pipeline folder without reading their weights: the contents
    of their JSON and text files, and the names and sizes of the others (weights)."""
    out: dict[str, Any] = {}
    for name in names:
        entries = {}
        for file in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
            if file.suffix in (".json", ".txt", ".model", ".jinja"):
                entries[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
            elif file.is_file():
                entries[file.name] = file.stat().st_size
        out[name] = entries
    return out


class EmbeddingStore:
    """``get(prompt)`` / ``put(prompt, row)`` of one prompt's conditioning row (batch dimension 1)."""

    def __init__(self, root: str | Path, key: Mapping[str, Any]):
        self.folder = Path(root).expanduser() / digest(dict(key))[:24]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            described = self.folder / "key.json"
            if not described.is_file():
                self._atomic_write(described, lambda tmp: tmp.write_text(json.dumps(dict(key), indent=1, default=str)))
        except OSError as err:
            raise UserError(f"run.embedding_cache {root} cannot be written ({err.strerror}): choose another "
                            "folder") from None

    def _file(self, prompt: str) -> Path:
        return self.folder / f"{hashlib.sha256(prompt.encode()).hexdigest()}.safetensors"

    def get(self, prompt: str) -> dict[str, Tensor] | None:
        from safetensors import safe_open

        file = self._file(prompt)
        if not file.is_file():
            return None
        with safe_open(str(file), framework="pt", device="cpu") as f:
            if (f.metadata() or {}).get("prompt") != prompt:
                return None  # a hash collision: encode it again
            names = f.keys()
            return {k: f.get_tensor(k) for k in names}

    def put(self, prompt: str, row: Mapping[str, Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in row.items()}
        self._atomic_write(self._file(prompt), lambda tmp: save_file(tensors, str(tmp), metadata={"prompt": prompt}))

    @staticmethod
    def _atomic_write(file: Path, write) -> None:
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, file)
