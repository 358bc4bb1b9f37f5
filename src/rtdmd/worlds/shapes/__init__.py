"""The shapes world: a tiny text-to-image world where the whole pipeline runs on a CPU (issue 5).

Images are 32x32 RGB drawings of coloured circles, squares and triangles on a 3x3 grid (:mod:`.render`),
described by GenEval-style compositional prompts (:mod:`.prompts`) and checked from the pixels by an oracle
(:mod:`.oracle`). The world ships a pixel-space SD3 teacher as a stock diffusers folder (:mod:`.teacher`) and
four rewards (:mod:`.rewards`): ``shapes_clip`` and ``shapes_pref`` (learned, differentiable), ``shapes_soft`` (the
soft oracle, :mod:`.soft_oracle`: differentiable, from the world's geometry) and ``shapes_oracle`` (the held-out
signal). ``scripts/train_world.py`` rebuilds every shipped weight.

The world's contract with trainers and the demo:

- ``prompts(split)`` -> :class:`~rtdmd.data.prompts.PromptSet` (texts + GenEval metadata), ``split`` in
  ``("train", "eval")``; ``eval`` is held out (a third of every tag); ``align`` (stage 2's prompts) is ``train``.
- ``metrics(images, prompt_set)`` -> flat ``dict[str, float]``: oracle accuracy (``accuracy`` = mean of the
  per-tag accuracies ``accuracy/<tag>``), image statistics and within-prompt diversity.
- ``evaluate(samples, rewards, beta, seed)`` -> ``{"summary", "prompts"}``: the worlds' common evaluation
  contract (:mod:`rtdmd.app.world_metrics`): ``metrics`` of all samples plus the run's reward components, and
  per prompt its oracle accuracy, rewards and diversity.
- ``teacher_path`` / ``max_sequence_length`` / ``image_size`` / ``teacher_guidance``: what an SD3 backbone needs
  to load and sample the teacher (the guidance scale is the one the measurement phase of
  ``scripts/train_world.py`` chose, read from ``teacher_metrics.json`` beside the shipped teacher).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from rtdmd.config.strict import check
from rtdmd.data.prompts import PromptSet, load_prompts
from rtdmd.errors import UserError
from rtdmd.worlds.shapes import oracle, stats, teacher
from rtdmd.worlds.shapes.render import IMAGE_SIZE

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "shapes"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class ShapesWorldConfig:
    """Which prompt files and teacher the world uses; empty strings select the shipped assets."""

    kind: Literal["shapes"] = "shapes"
    train_prompts: str = ""  # JSONL with GenEval-style metadata; "" = the shipped train split
    eval_prompts: str = ""  # "" = the shipped held-out split
    teacher: str = ""  # StableDiffusion3Pipeline folder; "" = the shipped teacher
    image_size: int = 32  # the renderer draws 32x32 (fixed by the grid geometry)

    def __post_init__(self):

        check(self.image_size == IMAGE_SIZE,
              f"image_size must be {IMAGE_SIZE} (the shapes world draws {IMAGE_SIZE}x{IMAGE_SIZE} images), "
              f"got {self.image_size}")

    def teacher_folder(self) -> Path:
        """The teacher's diffusers folder: ``teacher``, or the shipped one (known before anything loads)."""
        return Path(self.teacher) if self.teacher else ASSETS / "teacher"


class ShapesWorld:
    def __init__(self, cfg: ShapesWorldConfig):

        self.cfg = cfg
        self.image_size = cfg.image_size
        self.teacher_path = cfg.teacher_folder()
        self.max_sequence_length = teacher.MAX_SEQUENCE_LENGTH
        self._files = {"train": cfg.train_prompts or ASSETS / "train.jsonl",
                       "eval": cfg.eval_prompts or ASSETS / "eval.jsonl"}
        self._cache: dict[str, PromptSet] = {}

    @property
    def teacher_guidance(self) -> float | None:
        """The CFG scale measured best for the shipped teacher (None for a teacher without metrics)."""

        metrics = self.teacher_path.parent / "teacher_metrics.json"
        if self.cfg.teacher or not metrics.is_file():
            return None
        return float(json.loads(metrics.read_text())["cfg"])

    def prompts(self, split: str) -> PromptSet:
        if split == "align":  # stage 2 trains on the same prompts as stage 1 in this world
            split = "train"
        if split not in SPLITS:
            raise UserError(f"unknown prompt split {split!r} of the shapes world: use 'train' or 'eval'")
        if split not in self._cache:
            prompt_set = load_prompts(self._files[split])
            for text, meta in zip(prompt_set.texts, prompt_set.metadata):
                if "tag" not in meta or "include" not in meta:
                    raise UserError(f"{self._files[split]}: prompt {text!r} lacks GenEval metadata "
                                    "('tag' and 'include'): the oracle needs both")
            self._cache[split] = prompt_set
        return self._cache[split]

    def metadata(self, prompt: str) -> dict:
        """GenEval metadata of a prompt of either split (UserError for a prompt outside them)."""
        for split in SPLITS:
            prompt_set = self.prompts(split)
            if prompt in prompt_set.texts:
                return dict(prompt_set.metadata[prompt_set.texts.index(prompt)])
        raise UserError(f"prompt {prompt!r} is in neither prompt file of the shapes world: the oracle needs "
                        "its metadata")

    def evaluate(self, samples, rewards, beta: float, seed: int = 0) -> dict:
        """``samples``: prompt -> decoded images ``(n, 3, H, W)`` in [0, 1]. ``beta`` and ``seed`` are unused
        (the oracle is exact and deterministic)."""

        texts, images = [], []
        for prompt, x in samples.items():
            texts += [prompt] * len(x)
            images.append(torch.as_tensor(x).detach().float().cpu())
        images = torch.cat(images)
        metadata = [self.metadata(t) for t in texts]
        summary = self.metrics(images, PromptSet(tuple(texts), tuple(metadata)))
        scores = rewards.score(images, texts, metadata) if rewards is not None else {}
        if scores:
            scores = {**scores, "reward": rewards.total(scores)}
            summary.update({name: float(s.float().mean()) for name, s in scores.items()})

        verdicts = oracle.score(images.numpy(), metadata)
        per_prompt, start = {}, 0
        for prompt, x in samples.items():
            rows = slice(start, start + len(x))
            start += len(x)
            per_prompt[prompt] = {"accuracy": float(verdicts[rows].mean()),
                                  "diversity": stats.within_prompt_diversity(images[rows].numpy(), [prompt] * len(x)),
                                  **{name: float(s[rows].float().mean()) for name, s in scores.items()}}
        return {"summary": summary, "prompts": per_prompt}

    def metrics(self, images, prompt_set: PromptSet) -> dict[str, float]:
        """Metrics of ``images`` ``(N, 3, H, W)`` in [0, 1] (tensor or array), one per entry of ``prompt_set``
        (repeat a prompt for several seeds)."""

        x = _as_numpy(images)
        if len(x) != len(prompt_set):
            raise ValueError(f"{len(x)} images for {len(prompt_set)} prompts: give one prompt entry per image")
        correct = oracle.score(x, prompt_set.metadata)
        accuracy = oracle.accuracy(correct, [m["tag"] for m in prompt_set.metadata])
        out = {"accuracy": accuracy.pop("overall")}
        out.update({f"accuracy/{tag}": value for tag, value in accuracy.items()})
        out.update(mean_intensity=stats.mean_intensity(x), saturation=stats.saturation(x),
                   color_entropy=stats.color_entropy(x),
                   diversity=stats.within_prompt_diversity(x, prompt_set.texts))
        return out


def _as_numpy(images) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(x.shape)}")
    return x


def build(cfg: ShapesWorldConfig) -> ShapesWorld:
    return ShapesWorld(cfg)
