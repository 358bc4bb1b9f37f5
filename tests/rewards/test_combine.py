"""Multi-reward helpers: running statistics (exact for any batching, resumable), per-component logging, and
stage-2 group normalisation (spec 5.4) on hand-computed values."""

import math

import pytest
import torch

from rtdmd.config import RewardEntry
from rtdmd.rewards import combine
from rtdmd.rewards.base import RewardSet


def test_running_stats_match_numpy_for_any_batching():
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3 + 7
    for sizes in ([1000], [1] * 10 + [990], [7, 300, 1, 692]):
        stats = combine.RunningStats()
        start = 0
        for n in sizes:
            stats.update(values[start:start + n])
            start += n
        assert stats.count == 1000
        assert stats.mean == pytest.approx(values.double().mean().item(), abs=1e-12)
        assert stats.std == pytest.approx(values.double().std(unbiased=False).item(), rel=1e-12)


def test_running_stats_resume_continues_exactly():
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([8.0, 16.0])
    whole = combine.RunningStats()
    whole.update(a)
    whole.update(b)
    first = combine.RunningStats()
    first.update(a)
    resumed = combine.RunningStats()
    resumed.load_state_dict(first.state_dict())
    resumed.update(b)
    assert resumed.state_dict() == whole.state_dict()
    # hand values: mean 31/5 = 6.2; population variance (1+4+16+64+256)/5 - 6.2^2 = 29.76
    assert whole.mean == pytest.approx(6.2) and whole.var == pytest.approx(29.76)


def test_reward_log_reports_every_component_and_the_total():
    log = combine.RewardLog(["clip", "hps"])
    log.update({"clip": torch.tensor([0.2, 0.4]), "hps": torch.tensor([1.0, 3.0])})
    metrics = log.update({"clip": torch.tensor([0.6, 0.8]), "hps": torch.tensor([5.0, 7.0])},
                         weights={"clip": 1.0, "hps": 0.5})
    assert metrics["reward/clip/mean"] == pytest.approx(0.7)
    assert metrics["reward/clip/std"] == pytest.approx(0.1)
    assert metrics["reward/clip/running_mean"] == pytest.approx(0.5)
    assert metrics["reward/hps/running_std"] == pytest.approx(math.sqrt(5.0))  # var of 1,3,5,7
    assert metrics["reward/hps/z"] == pytest.approx((6.0 - 4.0) / math.sqrt(5.0))
    assert metrics["reward/total/mean"] == pytest.approx(0.7 + 0.5 * 6.0)
    resumed = combine.RewardLog()
    resumed.load_state_dict(log.state_dict())
    assert resumed.state_dict() == log.state_dict()


def test_group_advantages_paper_by_hand():
    """Two groups of two, two rewards. clip: group means 1, 3 -> centred (-1, 1, -1, 1), batch std of (0,2,2,4)
    is sqrt(2); hps: centred (-2, 2, 0, 0), batch std of (0, 4, 5, 5) is sqrt(4.25)."""
    scores = {"clip": torch.tensor([0.0, 2.0, 2.0, 4.0]), "hps": torch.tensor([0.0, 4.0, 5.0, 5.0])}
    weights = {"clip": 1.0, "hps": 2.0}
    eps = 1e-4
    raw = (torch.tensor([-1.0, 1.0, -1.0, 1.0]) / (math.sqrt(2) + eps)
           + 2 * torch.tensor([-2.0, 2.0, 0.0, 0.0]) / (math.sqrt(4.25) + eps)).double()
    expected = (raw - raw.mean()) / (raw.std(unbiased=False) + eps)
    got = combine.group_advantages(scores, weights, group_size=2)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
    # exact: leave-one-out baseline, K/(K-1) * (total - group mean) / beta, total = (0, 10, 12, 14)
    got = combine.group_advantages(scores, weights, group_size=2, method="exact", beta=0.5)
    torch.testing.assert_close(got, torch.tensor([-20.0, 20.0, -4.0, 4.0]))


def test_component_advantages_and_their_agreement():
    scores = {"a": torch.tensor([0.0, 1.0, 0.0, 1.0]), "b": torch.tensor([1.0, 0.0, 1.0, 0.0])}
    parts = combine.component_advantages(scores, group_size=2)
    torch.testing.assert_close(parts["a"], -parts["b"])
    metrics = combine.advantage_metrics(scores, parts["a"], group_size=2)
    assert metrics["reward/a/adv_corr"] == pytest.approx(1.0) and metrics["reward/b/adv_corr"] == pytest.approx(-1.0)


class Constant:
    differentiable = False

    def __init__(self, value):
        self.value = value

    def __call__(self, images, prompts, metadata=None):
        return torch.full((images.shape[0],), self.value)


def test_build_reward_set_through_registry(monkeypatch):
    from rtdmd import registry

    monkeypatch.setitem(registry.KINDS["reward"], "const", ("tests.rewards.test_combine", "ConstConfig", "build_const"))
    entries = [RewardEntry("const", weight=2.0, bp_scale=0.5, name="first", params=ConstConfig(3.0)),
               RewardEntry("const", params=ConstConfig(-1.0))]
    rewards = combine.build_reward_set(entries)
    assert isinstance(rewards, RewardSet) and rewards.weights == {"first": 2.0, "const": 1.0}
    scores = rewards.score(torch.zeros(2, 3, 4, 4), ["a", "b"])
    torch.testing.assert_close(rewards.total(scores), torch.full((2,), 5.0))
    assert rewards.entries[0].bp_scale == 0.5


class ConstConfig:
    def __init__(self, value=0.0):
        self.value = value


def build_const(cfg, *, world=None, device="cpu"):
    return Constant(cfg.value)
