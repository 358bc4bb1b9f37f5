"""The prompt-set world of the image recipes: the training prompts of stage 1, optionally other training
prompts for stage 2, and an optional held-out set. Each is a prompt source (:mod:`rtdmd.data.sources`): a file
(``.txt``, one prompt per line, or ``.jsonl`` with a ``prompt`` field and metadata such as GenEval's), a
registered public set (``benchmark:pickapic_sfw/train``, fetched and hash-checked), or generated prompts
(``generated:geneval?num=50000&seed=0``).

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
from rtdmd.data.prompts import PromptSet
from rtdmd.data.sources import PromptSource, parse_source
from rtdmd.errors import ConfigError

SPLITS = ("train", "align", "eval")


@dataclass(frozen=True)
class PromptsWorldConfig:
    kind: Literal["prompts"] = "prompts"
    train: str = ""  # training prompts of stage 1 (rtdmd distill), and of stage 2 unless align_train is set
    align_train: str | None = None  # training prompts of stage 2 (rtdmd align); None: train
    eval: str | None = None  # held-out prompts for evaluation; None: evaluate on the training prompts

    def __post_init__(self):
        check(bool(self.train), "train must name a prompt set: a .txt or .jsonl file, benchmark:NAME or "
              "generated:NAME?num=N&seed=S")
        for name in ("train", "align_train", "eval"):
            self.source(name)

    def source(self, field: str) -> PromptSource | None:
        """The prompt source of a field (None when unset); a malformed one names the field."""
        text = getattr(self, field)
        try:
            return None if text is None else parse_source(text)
        except ConfigError as err:
            raise ConfigError(f"{field}: {err}") from None

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): every prompt set reads (files), is fetched and
        verified (benchmarks) or generated; each problem is one line."""
        for name in ("train", "align_train", "eval"):
            source = self.source(name)
            if source is not None:
                source.load()


class PromptsWorld:
    """Prompt sets loaded once (a source named by two splits is loaded once)."""

    teacher_path = None  # the backbone's own path names the teacher

    def __init__(self, cfg: PromptsWorldConfig):
        self.cfg = cfg
        self._sets: dict[str, PromptSet] = {}

    def source(self, split: str) -> PromptSource:
        """``train``: stage 1's; ``align``: stage 2's (``align_train``, else ``train``); ``eval``: the held-out
        set (``eval``, else ``train``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} ({', '.join(SPLITS)})")
        field = {"train": "train", "align": "align_train", "eval": "eval"}[split]
        return self.cfg.source(field) or self.cfg.source("train")

    def prompts(self, split: str = "train") -> PromptSet:
        """The prompt set of ``split`` (see :meth:`source`)."""
        key = str(self.source(split))
        if key not in self._sets:
            self._sets[key] = self.source(split).load()
        return self._sets[key]

    def _metadata(self, prompt: str) -> Mapping:
        for split in ("eval", "align", "train"):
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
