"""Prompt sets: plain text (one prompt per line) or JSONL (``{"prompt": ..., <metadata>}`` per line)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtdmd.errors import UserError


@dataclass(frozen=True)
class PromptSet:
    texts: tuple[str, ...]
    metadata: tuple[Mapping[str, Any], ...] = field(default=())

    def __post_init__(self):
        if not self.metadata:
            object.__setattr__(self, "metadata", tuple({} for _ in self.texts))
        if len(self.metadata) != len(self.texts):
            raise ValueError("one metadata record per prompt")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> PromptSet:
        return PromptSet(tuple(self.texts[i] for i in indices), tuple(self.metadata[i] for i in indices))


def load_prompts(path: str | Path) -> PromptSet:
    """Read a ``.txt`` or ``.jsonl`` prompt file; every problem is a one-line :class:`UserError`."""
    file = Path(path)
    if file.is_dir():
        raise UserError(f"prompt file {file} is a directory: give a .txt (one prompt per line) or .jsonl file")
    if not file.is_file():
        raise UserError(f"prompt file {file} does not exist: give a .txt (one prompt per line) or .jsonl file")
    try:
        data = file.read_bytes()
    except OSError as err:
        raise UserError(f"prompt file {file} cannot be read: {err.strerror}") from None
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is not part of the first prompt
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"prompt file {file} is not valid UTF-8 (line {line}, byte {err.start}): "
                        f"save it as UTF-8") from None
    # Lines end at "\n" only: str.splitlines would also split inside prompts at U+2028, \x0c, \x1c, ...
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if file.suffix == ".jsonl":
        texts, metadata = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{file} line {number}: malformed JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise UserError(f"{file} line {number}: each line needs a string field 'prompt'")
            texts.append(record["prompt"])
            metadata.append({k: v for k, v in record.items() if k != "prompt"})
        prompts = PromptSet(tuple(texts), tuple(metadata))
    else:
        prompts = PromptSet(tuple(line.strip() for line in lines if line.strip()))
    if not prompts.texts:
        raise UserError(f"prompt file {file} holds no prompts")
    return prompts
