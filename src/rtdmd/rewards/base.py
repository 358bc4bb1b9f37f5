"""The reward protocol and a weighted set of rewards.

A reward scores a batch of what the backbone decodes (images in [0, 1] of shape ``(B, 3, H, W)``, or vectors
``(B, d)`` in the analytic world) given the prompts and their metadata, and says whether its score can be
back-propagated to the pixels. Heavy imports happen inside each reward's builder, never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Reward(Protocol):
    differentiable: bool

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        """Scores of shape ``(B,)`` (float32). Differentiable rewards keep the graph to ``images``."""


@dataclass
class WeightedReward:
    name: str
    reward: Reward
    weight: float = 1.0
    bp_scale: float = 1.0  # factor in the back-propagation path only


class RewardSet:
    """The run's rewards: every component is scored and logged separately."""

    def __init__(self, entries: Sequence[WeightedReward]):
        if not entries:
            raise ValueError("a reward set needs at least one reward")
        self.entries = list(entries)

    @property
    def weights(self) -> dict[str, float]:
        return {e.name: e.weight for e in self.entries}

    @property
    def differentiable(self) -> list[WeightedReward]:
        return [e for e in self.entries if e.reward.differentiable]

    def score(self, images: Tensor, prompts: Sequence[str],
              metadata: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Tensor]:
        """Every component's scores, without gradients."""
        with torch.no_grad():
            return {e.name: e.reward(images, prompts, metadata).float() for e in self.entries}

    def total(self, scores: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of component scores."""
        return sum(self.weights[name] * s for name, s in scores.items())
