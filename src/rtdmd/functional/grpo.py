"""SubGRPO pieces: group advantages, the clipped policy surrogate and the step subset (spec 5.3-5.5).

Notation: ``B`` samples in consecutive groups of ``K`` (one prompt per group), so ``B % K == 0`` and group
``g`` holds samples ``g*K .. g*K + K - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def group_mean(values: Tensor, group_size: int) -> Tensor:
    """Mean of each sample's group, broadcast back to ``(B,)``."""
    grouped = values.reshape(-1, group_size)
    return grouped.mean(1, keepdim=True).expand_as(grouped).reshape(-1)


def advantages_paper(rewards: Mapping[str, Tensor], weights: Mapping[str, float], group_size: int,
                     eps: float = 1e-4, clip: float = 5.0) -> Tensor:
    """Published advantages (spec 5.4): per reward, subtract the group mean and divide by the std over the
    whole batch (+eps); weighted sum; re-standardise over the batch; clip to ``+-clip``.

    Shape: each reward ``(B,)`` over the global batch -> ``(B,)``.
    """
    total = None
    for name, r in rewards.items():
        r = r.double()
        centred = r - group_mean(r, group_size)
        term = weights[name] * centred / (r.std(unbiased=False) + eps)
        total = term if total is None else total + term
    total = (total - total.mean()) / (total.std(unbiased=False) + eps)
    return total.clamp(-clip, clip).float()


def advantages_exact(rewards: Mapping[str, Tensor], weights: Mapping[str, float], group_size: int,
                     beta: float) -> Tensor:
    """Advantages of the ``exact`` weighting: raw weighted reward minus the mean of the OTHER members of the
    group (the leave-one-out baseline, ``K/(K-1) * (r - group mean)``), scaled by ``1/beta``.

    The leave-one-out baseline is independent of the sample's own noise, so
    ``E[A * grad log pi] = grad E[r] / beta`` exactly (the plain group mean shrinks it by ``(K-1)/K``).
    """
    if group_size < 2:
        raise ValueError("exact advantages need a group of at least 2 samples")
    total = sum(weights[name] * r.double() for name, r in rewards.items())
    loo = group_size / (group_size - 1) * (total - group_mean(total, group_size))
    return (loo / beta).float()


def clipped_policy_loss(log_prob: Tensor, log_prob_old: Tensor, advantages: Tensor,
                        clip_range: float) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate per sample, ``max(-A * ratio, -A * clip(ratio, 1-eps, 1+eps))`` (spec 5.5).

    Returns ``(loss (B,), clipped (B,) bool)``. With one optimiser step per rollout the ratio is 1 and the
    gradient is REINFORCE's ``-A * grad log pi``.
    """
    ratio = torch.exp(log_prob - log_prob_old.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped), (unclipped < clipped).detach()


def choose_step_subset(num_stochastic: int, size: int, generator: torch.Generator) -> list[int]:
    """SubGRPO's random subset of ``size`` of the stochastic steps ``0..num_stochastic-1`` (sorted).
    Pass a generator seeded identically on every rank so all ranks train the same steps."""
    if not 1 <= size <= num_stochastic:
        raise ValueError(f"subset size must be in [1, {num_stochastic}], got {size}")
    return sorted(torch.randperm(num_stochastic, generator=generator)[:size].tolist())
