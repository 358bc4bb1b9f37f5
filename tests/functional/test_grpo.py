import math

import numpy as np
import pytest
import torch

from rtdmd.functional import grpo, reward_bp


def test_paper_advantages_against_a_numpy_loop():
    gen = torch.Generator().manual_seed(3)
    k, groups = 4, 3
    rewards = {"a": torch.randn(k * groups, generator=gen), "b": 10 * torch.randn(k * groups, generator=gen)}
    weights = {"a": 1.0, "b": 0.5}
    total = np.zeros(k * groups)
    for name, r in rewards.items():
        r = r.numpy().astype(np.float64)
        centred = np.concatenate([g - g.mean() for g in np.split(r, groups)])
        total += weights[name] * centred / (r.std() + 1e-4)
    total = np.clip((total - total.mean()) / (total.std() + 1e-4), -5, 5)
    np.testing.assert_allclose(grpo.advantages_paper(rewards, weights, k).numpy(), total, rtol=1e-5, atol=1e-6)


def test_paper_advantages_are_clipped():
    r = torch.zeros(100)
    r[0] = 1000.0
    adv = grpo.advantages_paper({"r": r}, {"r": 1.0}, 100, clip=2.0)
    assert adv.max().item() == pytest.approx(2.0)


def test_exact_advantages_use_leave_one_out_baseline():
    r = torch.tensor([1.0, 2.0, 4.0, 0.0, 3.0, 3.0])
    adv = grpo.advantages_exact({"r": r}, {"r": 2.0}, 3, beta=0.5)
    expected = [(2 * r[i] - 2 * np.mean([r[j] for j in range(g * 3, g * 3 + 3) if j != i])) / 0.5
                for g in range(2) for i in range(g * 3, g * 3 + 3)]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float32))


def test_clipped_policy_loss():
    logp = torch.tensor([0.0, 0.1, -0.1, 0.0], requires_grad=True)
    old = torch.tensor([0.0, 0.0, 0.0, 0.0])
    adv = torch.tensor([1.0, 1.0, 1.0, -2.0])
    loss, clipped = grpo.clipped_policy_loss(logp, old, adv, 0.05)
    ratio = torch.exp(logp.detach())
    torch.testing.assert_close(loss.detach(), torch.maximum(-adv * ratio, -adv * ratio.clamp(0.95, 1.05)))
    assert clipped.tolist() == [False, True, False, False]
    loss.sum().backward()
    # ratio 1: REINFORCE gradient -A; clipped sample gets no gradient
    torch.testing.assert_close(logp.grad, torch.tensor([-1.0, 0.0, -ratio[2].item(), 2.0]))


def test_step_subset_is_seeded_and_uniform():
    subsets = [tuple(grpo.choose_step_subset(3, 2, torch.Generator().manual_seed(i))) for i in range(3000)]
    assert all(len(s) == 2 and len(set(s)) == 2 and all(0 <= j < 3 for j in s) for s in subsets)
    for step in range(3):
        assert np.mean([step in s for s in subsets]) == pytest.approx(2 / 3, abs=0.03)
    assert subsets[5] == tuple(grpo.choose_step_subset(3, 2, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError):
        grpo.choose_step_subset(3, 4, torch.Generator())


def test_reward_bp_losses():
    r = torch.tensor([1.0, 4.0], requires_grad=True)
    torch.testing.assert_close(reward_bp.reward_bp_loss_paper(r, 3.0), torch.tensor([2.0, 0.0]))
    reward_bp.reward_bp_loss_exact(r, 0.5).sum().backward()
    torch.testing.assert_close(r.grad, torch.tensor([-2.0, -2.0]))


def test_group_advantages_paper_by_hand():
    """Two groups of two, two rewards. clip: group means 1, 3 -> centred (-1, 1, -1, 1), batch std of (0,2,2,4)
    is sqrt(2); hps: centred (-2, 2, 0, 0), batch std of (0, 4, 5, 5) is sqrt(4.25)."""
    scores = {"clip": torch.tensor([0.0, 2.0, 2.0, 4.0]), "hps": torch.tensor([0.0, 4.0, 5.0, 5.0])}
    weights = {"clip": 1.0, "hps": 2.0}
    eps = 1e-4
    raw = (torch.tensor([-1.0, 1.0, -1.0, 1.0]) / (math.sqrt(2) + eps)
           + 2 * torch.tensor([-2.0, 2.0, 0.0, 0.0]) / (math.sqrt(4.25) + eps)).double()
    expected = (raw - raw.mean()) / (raw.std(unbiased=False) + eps)
    got = grpo.advantages_paper(scores, weights, group_size=2)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
    # exact: leave-one-out baseline, K/(K-1) * (total - group mean) / beta, total = (0, 10, 12, 14)
    got = grpo.advantages_exact(scores, weights, group_size=2, beta=0.5)
    torch.testing.assert_close(got, torch.tensor([-20.0, 20.0, -4.0, 4.0]))
