"""Building a config's reward set through the registry (the kind's builder, names, weights, BP scales)."""

import torch

from rtdmd.config import RewardEntry
from rtdmd.rewards.base import RewardSet
from rtdmd.train.components import build_rewards


class Constant:
    differentiable = False

    def __init__(self, value):
        self.value = value

    def __call__(self, images, prompts, metadata=None):
        return torch.full((images.shape[0],), self.value)


def test_build_rewards_through_registry(monkeypatch):
    from rtdmd import registry

    monkeypatch.setitem(registry.KINDS["reward"], "const", ("tests.train.test_components", "ConstConfig", "build_const"))
    entries = [RewardEntry("const", weight=2.0, bp_scale=0.5, name="first", params=ConstConfig(3.0)),
               RewardEntry("const", params=ConstConfig(-1.0))]
    rewards = build_rewards(entries)
    assert isinstance(rewards, RewardSet) and rewards.weights == {"first": 2.0, "const": 1.0}
    scores = rewards.score(torch.zeros(2, 3, 4, 4), ["a", "b"])
    torch.testing.assert_close(rewards.total(scores), torch.full((2,), 5.0))
    assert rewards.entries[0].bp_scale == 0.5


class ConstConfig:
    def __init__(self, value=0.0):
        self.value = value


def build_const(cfg, *, world=None, device="cpu"):
    return Constant(cfg.value)
