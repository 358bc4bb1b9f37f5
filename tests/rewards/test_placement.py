"""Rewards on a chosen device, offloaded between calls (``run.reward_device``, ``run.reward_offload``): the same
scores and gradients as the reward itself, weights back in host memory after a call without gradient at once and
after a call with gradient only once its backward pass has run (the backward needs them)."""

import pytest
import torch

from rtdmd.config.sections import RewardEntry
from rtdmd.errors import UserError
from rtdmd.rewards.base import PlacedReward
from rtdmd.train.components import build_rewards
from tests.backbones.image_reward import BrightnessConfig, registered


class Weighted(torch.nn.Module):
    """A differentiable reward with weights that records where it is moved."""

    differentiable = True

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]), requires_grad=False)
        self.moves = []

    def to(self, device):
        self.moves.append(str(device))
        return super().to(device)

    def forward(self, images, prompts, metadata=None):
        return (images.mean((2, 3)) * self.w).sum(1)


def test_scores_gradients_and_offload_order():
    plain, inner = Weighted(), Weighted()
    placed = PlacedReward(inner, torch.device("cpu"), offload=True)
    assert inner.moves == ["cpu"]  # starts in host memory
    images = torch.rand(2, 3, 4, 4, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(placed(images, ["a", "b"]), plain(images, ["a", "b"]), rtol=0, atol=0)
    assert inner.moves == ["cpu", "cpu", "cpu"]  # to the device for the call, back at once
    scores = placed(images, ["a", "b"])
    assert inner.moves[-1] == "cpu" and len(inner.moves) == 4  # still on the device: its backward is pending
    (grad,) = torch.autograd.grad(scores.sum(), images)
    assert len(inner.moves) == 5  # back in host memory after the backward pass
    (expected,) = torch.autograd.grad(plain(images, ["a", "b"]).sum(), images)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_offload_needs_a_reward_that_can_move():
    entries = [RewardEntry(kind="brightness", params=BrightnessConfig())]
    with registered():
        (same,) = build_rewards(entries, device="cpu").entries
        with pytest.raises(UserError, match="run.reward_offload: reward Brightness cannot move its weights"):
            build_rewards(entries, device="cpu", offload=True)
    assert not isinstance(same.reward, PlacedReward)  # same device, no offload: the reward itself
