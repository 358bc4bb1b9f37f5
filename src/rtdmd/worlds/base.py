"""The world protocol: what to generate and how to judge it (the third plug-in interface, beside backbones and
rewards).

A world supplies the prompt sets of training and evaluation and evaluates generated samples; it may also ship
the teacher (the shapes world does) or be the teacher (the analytic world, whose velocity is exact). Trainers
only call :meth:`World.prompts`; the application layer calls :meth:`World.evaluate`; a backbone that needs
more of its world asks for a narrower protocol (:class:`AnalyticWorld`) and refuses other worlds with one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from rtdmd.data.prompts import PromptSet
from rtdmd.rewards.base import RewardSet


@runtime_checkable
class World(Protocol):
    teacher_path: Path | None
    """A teacher folder the world ships (a backbone with an empty ``path`` loads it), or None."""

    def prompts(self, split: str) -> PromptSet:
        """The ``"train"`` (stage 1), ``"align"`` (stage 2's training prompts: the train set unless the world has
        its own) or ``"eval"`` (held-out) prompt set, with metadata."""

    def evaluate(self, samples: Mapping[str, Tensor], rewards: RewardSet, beta: float,
                 seed: int = 0) -> dict[str, Any]:
        """Metrics of ``samples`` (prompt -> decoded samples ``(n, ...)``): ``{"summary": {name: float},
        "prompts": {prompt: {name: float}}}``. ``rewards`` and ``beta`` define the tilted target where the world
        knows it; ``seed`` fixes any sampling the evaluation does (reference samples)."""


@runtime_checkable
class AnalyticWorld(World, Protocol):
    """A world whose teacher is known exactly (the analytic backbone's teacher is this velocity)."""

    dim: int
    prompt_names: list[str]

    def prompt_index(self, prompts: Sequence[str]) -> Tensor:
        """Prompt ids ``(B,)`` of prompt texts."""

    def teacher_velocity(self, x: Tensor, sigma: Tensor, prompt_ids: Tensor, guidance: float | None = None) -> Tensor:
        """The exact (guided) teacher velocity at ``(x, sigma)``."""

    def sample_data(self, prompt: int, n: int, generator: torch.Generator) -> Tensor:
        """``n`` exact samples of prompt ``prompt``'s clean data law (unguided)."""
