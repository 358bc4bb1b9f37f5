"""Claim 2: SubGRPO (a random 2 of the 3 stochastic steps, shared noise on the others) lowers the variance of the
stage-2 gradient estimator at equal sampling compute, without bias.

On the linear-Gaussian world of tests/train/test_align.py, where grad E[r] is known in closed form: a 1-D
generator whose velocity at step k is A_k x + B_k, a quadratic reward, the exact preset's estimator (score-function
sum over the trained steps scaled to be unbiased, reward back-propagation through the last step). Each estimate
uses one rollout of 16 groups of 8 (the same sampling compute in every arm); each seed repeats 300 estimates.
Arms: SubGRPO (|S| = 2, shared noise), GRPO on all three stochastic steps, and SubGRPO with the published step
weights (every step term / (|S| + 1): a scaled, biased estimate). Measured per seed: the variance of the
estimates (trace of their covariance), their bias (|mean - truth|, in standard errors) and their noise-to-signal
ratio (variance / squared norm of the mean: scale-free)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from rtdmd.config import AlignConfig
from rtdmd.rewards.base import RewardSet, WeightedReward
from studies.common import Claim, Row
from tests.train.test_align import EXACT, LinearGenerator, Quadratic, expected_reward, reward_gradient_estimates

ARMS = {"SubGRPO (2 of 3, shared noise)": {"subset_size": 2},
        "GRPO (all 3 steps)": {"subset_size": 3},
        "SubGRPO, published step weights": {"subset_size": 2, "step_weighting": "published"}}
SEEDS = (0, 1, 2, 3, 4)


def run(out: Path, quick: bool) -> Claim:
    start = time.perf_counter()
    seeds, iterations = (SEEDS[:2], 20) if quick else (SEEDS, 300)
    gen, center = LinearGenerator(), 1.5
    truth = torch.cat(torch.autograd.grad(expected_reward(gen, center), [gen.A, gen.B])).float()
    rewards = RewardSet([WeightedReward("q", Quadratic(center))])
    variance, bias, error = ({arm: [] for arm in ARMS} for _ in range(3))
    for arm, overrides in ARMS.items():
        cfg = dataclasses.replace(AlignConfig(), **{**EXACT, **overrides})
        for seed in seeds:
            estimates = reward_gradient_estimates(gen, rewards, 1.0, cfg, iterations=iterations, seed=seed + 1)
            variance[arm].append(float(estimates.var(0).sum()))
            stderr = estimates.std(0) / math.sqrt(len(estimates))
            bias[arm].append(float(((estimates.mean(0) - truth) / stderr).abs().max()))
            error[arm].append(float(estimates.var(0).sum() / estimates.mean(0).pow(2).sum()))
    claim = Claim(2, "SubGRPO lowers the variance of the stage-2 gradient estimator")
    names = list(ARMS)
    row = Row("variance of one estimate (trace of the covariance), equal sampling compute", "variance", variance,
              decision=(names[0], names[1]), lower_is_better=True)
    diff, se = row.paired()
    row.verdict = ("SubGRPO lower (holds)" if diff < -2 * se else
                   "SubGRPO higher (does not hold)" if diff > 2 * se else "no difference beyond 2 standard errors")
    claim.rows.append(row)
    row = Row("bias: the largest |mean - closed form| over the 8 parameters, in standard errors of the mean", "bias",
              bias)
    row.verdict = "biased: " + (", ".join(a for a in ARMS if row.summary(a)[0] >= 4) or "none")
    claim.rows.append(row)
    row = Row("noise-to-signal: the variance over the squared norm of the mean (scale-free, so estimators of "
              "different scale compare)", "relative variance", error, decision=(names[2], names[1]), lower_is_better=True)
    diff, se = row.paired()
    row.verdict = ("published SubGRPO lower than all steps (holds)" if diff < -2 * se else
                   "published SubGRPO higher (does not hold)" if diff > 2 * se else "no difference beyond 2 SE")
    claim.rows.append(row)
    ratio = sum(variance[names[0]]) / sum(variance[names[1]])
    claim.notes.append(f"Variance of SubGRPO / all steps: {ratio:.2f}. SubGRPO's sum is scaled by 3/2 to stay "
                       f"unbiased, which adds variance; the shared noise on the untrained step removes the part of "
                       f"the within-group reward spread that step would add.")
    claim.seconds = time.perf_counter() - start
    claim.command = "python -m studies.claims --only 2"
    return claim
