"""The plain prompt-file world of the image recipes: a training prompt file and an optional held-out one
(``.txt``, one prompt per line, or ``.jsonl`` with a ``prompt`` field and metadata such as GenEval's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rtdmd.configtools import check
from rtdmd.data.prompts import PromptSet, load_prompts
from rtdmd.errors import UserError


@dataclass(frozen=True)
class PromptsWorldConfig:
    kind: Literal["prompts"] = "prompts"
    train: str = ""  # prompt file of training
    eval: str | None = None  # held-out prompt file (evaluation); None: none

    def __post_init__(self):
        check(bool(self.train), "train must name a prompt file (.txt or .jsonl)")


class PromptsWorld:
    """Prompt sets read once from files."""

    def __init__(self, cfg: PromptsWorldConfig):
        self.cfg = cfg
        self._sets: dict[str, PromptSet] = {}

    def prompts(self, split: str) -> PromptSet:
        """The ``"train"`` or ``"eval"`` prompt set."""
        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r} (train, eval)")
        if split not in self._sets:
            path = self.cfg.train if split == "train" else self.cfg.eval
            if path is None:
                raise UserError("world.eval is not set: give a held-out prompt file (world.eval=FILE)")
            self._sets[split] = load_prompts(path)
        return self._sets[split]


def build(cfg: PromptsWorldConfig) -> PromptsWorld:
    return PromptsWorld(cfg)
