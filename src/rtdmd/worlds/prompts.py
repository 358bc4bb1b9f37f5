"""The plain prompt-file world of the image recipes: a training prompt file and an optional held-out one
(``.txt``, one prompt per line, or ``.jsonl`` with a ``prompt`` field and metadata such as GenEval's).

It knows no ground truth: its evaluation is the run's rewards on generated images, per prompt (each component and
the weighted total) and averaged over prompts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.data.prompts import PromptSet, load_prompts


@dataclass(frozen=True)
class PromptsWorldConfig:
    kind: Literal["prompts"] = "prompts"
    train: str = ""  # prompt file of training
    eval: str | None = None  # held-out prompt file for evaluation; None: evaluate on the training prompts

    def __post_init__(self):
        check(bool(self.train), "train must name a prompt file (.txt or .jsonl)")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the prompt files read (each problem is one line)."""
        for path in (self.train, self.eval):
            if path is not None:
                load_prompts(path)


class PromptsWorld:
    """Prompt sets read once from files."""

    teacher_path = None  # the backbone's own path names the teacher

    def __init__(self, cfg: PromptsWorldConfig):
        self.cfg = cfg
        self._sets: dict[str, PromptSet] = {}

    def prompts(self, split: str = "train") -> PromptSet:
        """The ``"train"`` or ``"eval"`` prompt set (``eval`` is the training set when no file is given)."""
        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r} (train, eval)")
        if split not in self._sets:
            path = self.cfg.eval if split == "eval" and self.cfg.eval is not None else self.cfg.train
            self._sets[split] = load_prompts(path)
        return self._sets[split]

    def _metadata(self, prompt: str) -> Mapping:
        for split in ("eval", "train"):
            prompts = self.prompts(split)
            if prompt in prompts.texts:
                return prompts.metadata[prompts.texts.index(prompt)]
        return {}

    def evaluate(self, samples: Mapping[str, Tensor], rewards, beta: float, seed: int = 0) -> dict:
        """Mean of every reward component and of the weighted total over each prompt's images
        (``samples``: prompt -> decoded images ``(n, 3, H, W)``), and their means over prompts."""
        per_prompt = {}
        for prompt, images in samples.items():
            n = len(images)
            scores = rewards.score(images, [prompt] * n, [self._metadata(prompt)] * n)
            row = {name: float(s.float().mean()) for name, s in scores.items()}
            row["reward"] = float(rewards.total(scores).float().mean())
            per_prompt[prompt] = row
        keys = next(iter(per_prompt.values())).keys() if per_prompt else []
        summary = {k: float(torch.tensor([m[k] for m in per_prompt.values()]).mean()) for k in keys}
        return {"summary": summary, "prompts": per_prompt}


def build(cfg: PromptsWorldConfig) -> PromptsWorld:
    return PromptsWorld(cfg)
