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

from rtdmd.errors import UserError


@runtime_checkable
class Reward(Protocol):
    differentiable: bool

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        """Scores of shape ``(B,)`` (float32). Differentiable rewards keep the graph to ``images``."""


class PlacedReward:
    """A reward that runs on its own device (``run.reward_device``: e.g. another GPU, or the CPU) and, with
    ``offload`` (``run.reward_offload``), waits in host memory between calls. Images go to the reward's device
    and scores come back on theirs, gradient included. Offloading needs the reward's ``to(device)``; a
    differentiable reward called with gradient goes back to host memory once its backward pass has run (its
    weights take part in it)."""

    def __init__(self, reward: Reward, device: torch.device, offload: bool = False):
        if offload and not hasattr(reward, "to"):
            raise UserError(f"run.reward_offload: reward {type(reward).__name__} cannot move its weights (no to()): "
                            "set run.reward_offload false")
        self.reward, self.device, self.offload = reward, torch.device(device), offload
        self.differentiable = reward.differentiable
        if offload:
            reward.to("cpu")

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        if self.offload:
            self.reward.to(self.device)
        here = images.to(self.device)
        scores = self.reward(here, prompts, metadata)
        if self.offload:
            if scores.requires_grad and here.requires_grad:
                here.register_hook(self._offload_after_backward)
            else:
                self.reward.to("cpu")
        return scores.to(images.device)

    def _offload_after_backward(self, grad: Tensor) -> Tensor:
        self.reward.to("cpu")
        return grad


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
