"""Stage 2's reward gradient: SubGRPO on the stochastic steps + back-propagation through the deterministic last
step is an unbiased estimate of grad E[r], checked against a closed form (item 8 of the core issue)."""

import dataclasses
import math

import torch
from torch import nn

from rtdmd.config import AlignConfig
from rtdmd.functional import grpo
from rtdmd.functional.schedules import generator_sigmas
from rtdmd.rewards.base import RewardSet, WeightedReward
from rtdmd.rng import Draw, Streams
from rtdmd.train import objectives
from rtdmd.train.align import generator_terms, group_rollout

SIGMAS = generator_sigmas(shift=3.0)  # [1, 0.9, 0.75, 0.5, 0]
ETA = 0.9


class LinearGenerator:
    """A 1-D generator whose velocity at step k is ``A_k x + B_k``: the rollout stays Gaussian."""

    device = torch.device("cpu")
    sample_shape = (1,)

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.A = nn.Parameter(0.3 * torch.randn(4, generator=gen))
        self.B = nn.Parameter(0.3 * torch.randn(4, generator=gen))

    def velocity(self, x, sigma, cond):
        k = int(torch.argmin((SIGMAS[:4] - sigma[0]).abs()))
        return self.A[k] * x + self.B[k]

    def role(self, name, guidance=None):
        return self.velocity

    def trainable(self, role):
        return {"A": self.A, "B": self.B}

    def decode(self, x):
        return x


def expected_reward(gen: LinearGenerator, center: float) -> torch.Tensor:
    """E[-(x - c)^2] of the 4-step sampler in closed form (mean/variance recursion, written out by hand)."""
    cos_t, sin_t = math.cos(ETA * math.pi / 2), math.sin(ETA * math.pi / 2)
    mean, var = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    for k in range(4):
        a, b = float(SIGMAS[k]), float(SIGMAS[k + 1])
        A, B = gen.A[k].double(), gen.B[k].double()
        c = cos_t if b > 0 else 0.0
        # mu = (1-b)(x - a v) + b c (x + (1-a) v), v = A x + B
        slope = (1 - b) * (1 - a * A) + b * c * (1 + (1 - a) * A)
        offset = B * (-(1 - b) * a + b * c * (1 - a))
        mean, var = slope * mean + offset, slope**2 * var + (b * sin_t) ** 2
    return -((mean - center) ** 2) - var


class Quadratic:
    differentiable = True

    def __init__(self, center):
        self.center = center

    def __call__(self, x, prompts=(), metadata=None):
        return -((x[:, 0] - self.center) ** 2)


def test_subgrpo_plus_final_step_bp_is_unbiased():
    gen, center, beta = LinearGenerator(), 1.5, 1.0
    (truth_a, truth_b) = torch.autograd.grad(expected_reward(gen, center), [gen.A, gen.B])
    truth = torch.cat([truth_a, truth_b]).float()
    rewards = RewardSet([WeightedReward("q", Quadratic(center))])
    cfg = dataclasses.replace(AlignConfig(), dm=False, log_prob="gaussian", advantages="exact",
                              policy_reduction="unbiased_sum", bp_loss="linear", bp_weight=1.0, subset_size=2,
                              eta=ETA, fake_weighting="uniform", dm_loss="score", dm_weight=1.0,
                              dm_backprop="last_step")
    objective = objectives.stage2(cfg, beta, rewards)
    groups, k = 16, 8
    indices = list(range(groups * k))
    cond = {"dummy": torch.zeros(len(indices), 1)}
    estimates = []
    for it in range(300):
        streams = Streams(it)
        trained = grpo.choose_step_subset(3, 2, streams.generator("subset", it))
        draw = Draw(streams, it, indices, (1,), gen.device)
        traj = group_rollout(gen.velocity, cond, draw, k, SIGMAS, ETA, trained)
        scores = rewards.score(traj.final, [""] * len(indices))
        adv = objective.advantages(scores, rewards.weights, k)
        losses, _ = generator_terms(objective, gen.velocity, None, None, gen.decode, SIGMAS, ETA, trained, cond, traj,
                                    adv, [""] * len(indices), [{}] * len(indices), draw)
        loss = sum(losses.values()).mean()
        grad_a, grad_b = torch.autograd.grad(loss, [gen.A, gen.B])
        estimates.append(-torch.cat([grad_a, grad_b]))  # the loss descends -grad E[r] / beta
    estimates = torch.stack(estimates)
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    z = (mean - truth) / stderr
    assert z.abs().max() < 4.0, (mean, truth, stderr)
    # the check has power: the error bars are small against the gradient itself
    assert (stderr < 0.25 * truth.abs().max()).all()


def test_paper_reduction_averages_over_trained_steps():
    # "mean" divides the subset's sum by |S|; "unbiased_sum" multiplies it by #stochastic / |S|.
    gen = LinearGenerator()
    cond = {"dummy": torch.zeros(8, 1)}
    draw = Draw(Streams(0), 0, list(range(8)), (1,), gen.device)
    traj = group_rollout(gen.velocity, cond, draw, 4, SIGMAS, ETA, [0, 2])
    adv = torch.linspace(-1, 1, 8)
    policy = lambda reduction: objectives.PolicyLoss(objectives.LOG_PROBS["gaussian"], 1.0,  # noqa: E731
                                                    objectives.POLICY_REDUCTIONS[reduction])
    mean, _ = policy("mean")(gen.velocity, cond, traj, SIGMAS, ETA, [0, 2], adv)
    total, _ = policy("unbiased_sum")(gen.velocity, cond, traj, SIGMAS, ETA, [0, 2], adv)
    torch.testing.assert_close(total, mean * 2 * 3 / 2)


def test_untrained_steps_share_noise_within_groups():
    gen = LinearGenerator()
    k, groups = 4, 3
    cond = {"dummy": torch.zeros(k * groups, 1)}
    trained = [1]
    full = Draw(Streams(5), 7, list(range(k * groups)), (1,), gen.device)
    traj = group_rollout(gen.velocity, cond, full, k, SIGMAS, ETA, trained)
    for step in (0, 2):
        z = traj.noises[step].reshape(groups, k)
        assert torch.equal(z, z[:, :1].expand_as(z)) and len(set(z[:, 0].tolist())) == groups
    z = traj.noises[1].reshape(groups, k)
    assert len(set(z.flatten().tolist())) == k * groups
    # a rank holding only some members of a group draws the same shared noise (rows 5..8 straddle groups 1, 2)
    part = Draw(Streams(5), 7, list(range(5, 9)), (1,), gen.device)
    sub = group_rollout(gen.velocity, {"dummy": torch.zeros(4, 1)}, part, k, SIGMAS, ETA, trained)
    for step in range(3):
        torch.testing.assert_close(sub.noises[step], traj.noises[step][5:9])
    torch.testing.assert_close(sub.final, traj.final[5:9])
