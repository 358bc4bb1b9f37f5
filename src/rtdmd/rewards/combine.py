"""Several rewards together: building them from the config, running statistics for logging, and group-wise
normalisation for stage 2.

- :func:`build_reward_set`: the run's ``rewards:`` entries -> a :class:`~rtdmd.rewards.base.RewardSet` (through
  the registry).
- :class:`RunningStats` (Welford / Chan): per-reward mean and std over everything seen so far, for logging; it
  has ``state_dict``/``load_state_dict`` so that a resumed run continues its statistics.
- :class:`RewardLog`: one :class:`RunningStats` per component; ``update`` returns every component's metrics
  separately (batch mean/std, running mean/std, the batch mean in running z-units).
- :func:`group_advantages`: the stage-2 advantages of spec 5.4 (``paper``: per-reward group-normalised, summed,
  re-standardised, clipped; ``exact``: raw weighted reward minus the leave-one-out group baseline, / beta),
  and the same normalisation of each component alone for logging. The formulas live in
  :mod:`rtdmd.functional.grpo`; this module only routes to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from rtdmd.functional.grpo import advantages_exact, advantages_paper
from rtdmd.rewards.base import RewardSet, WeightedReward


def build_reward_set(entries: Sequence[Any], *, world=None, device="cpu") -> RewardSet:
    """Build every ``RewardEntry`` (``kind``, ``weight``, ``bp_scale``, ``name``, ``params``) of a config."""
    from rtdmd import registry

    built = []
    for entry in entries:
        reward = registry.builder("reward", entry.kind)(entry.params, world=world, device=device)
        built.append(WeightedReward(entry.name or entry.kind, reward, entry.weight, entry.bp_scale))
    return RewardSet(built)


class RunningStats:
    """Count, mean and sum of squared deviations of a stream of values (float64), merged batch by batch with
    Chan et al.'s parallel form of Welford's update, so that it is exact for any batching."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Tensor) -> None:
        values = values.detach().double().flatten().cpu()
        n = values.numel()
        if n == 0:
            return
        mean = values.mean().item()
        m2 = ((values - mean) ** 2).sum().item()
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def var(self) -> float:
        """Population variance (0 before two values)."""
        return self.m2 / self.count if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


class RewardLog:
    """Running statistics of every reward component, logged separately (``reward/<name>/...``)."""

    def __init__(self, names: Sequence[str] = ()):
        self.stats: dict[str, RunningStats] = {name: RunningStats() for name in names}

    def update(self, scores: Mapping[str, Tensor], weights: Mapping[str, float] | None = None) -> dict[str, float]:
        """Fold in one batch; return its metrics. With ``weights``, the weighted total is logged as ``total``."""
        metrics: dict[str, float] = {}
        items = dict(scores)
        if weights is not None:
            items["total"] = sum(weights[name] * s.detach().double() for name, s in scores.items())
        for name, values in items.items():
            stats = self.stats.setdefault(name, RunningStats())
            stats.update(values)
            values = values.detach().double()
            batch_mean = values.mean().item()
            metrics[f"reward/{name}/mean"] = batch_mean
            metrics[f"reward/{name}/std"] = values.std(unbiased=False).item()
            metrics[f"reward/{name}/running_mean"] = stats.mean
            metrics[f"reward/{name}/running_std"] = stats.std
            metrics[f"reward/{name}/z"] = (batch_mean - stats.mean) / stats.std if stats.std > 0 else 0.0
        return metrics

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {name: s.state_dict() for name, s in self.stats.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        self.stats = {}
        for name, s in state.items():
            self.stats[name] = RunningStats()
            self.stats[name].load_state_dict(s)


def group_advantages(scores: Mapping[str, Tensor], weights: Mapping[str, float], group_size: int, *,
                     method: Literal["paper", "exact"] = "paper", beta: float = 1.0, eps: float = 1e-4,
                     clip: float = 5.0) -> Tensor:
    """Stage-2 advantages over the GLOBAL batch (gather the scores across ranks first), spec 5.4.

    Shape: each score ``(B,)`` with ``B = groups * group_size``, consecutive groups -> ``(B,)``.
    """
    if method == "paper":
        return advantages_paper(scores, weights, group_size, eps=eps, clip=clip)
    return advantages_exact(scores, weights, group_size, beta=beta)


def component_advantages(scores: Mapping[str, Tensor], group_size: int, eps: float = 1e-4,
                         clip: float = 5.0) -> dict[str, Tensor]:
    """Each reward's own ``paper`` advantage (as if it were the only reward), for logging how much each
    component agrees with the combined advantage."""
    return {name: advantages_paper({name: s}, {name: 1.0}, group_size, eps=eps, clip=clip)
            for name, s in scores.items()}


def advantage_metrics(scores: Mapping[str, Tensor], combined: Tensor, group_size: int) -> dict[str, float]:
    """Per component: the correlation of its own advantage with the combined one (``reward/<name>/adv_corr``)."""
    metrics = {}
    for name, adv in component_advantages(scores, group_size).items():
        a, b = adv.double() - adv.double().mean(), combined.double() - combined.double().mean()
        denom = (a.norm() * b.norm()).item()
        metrics[f"reward/{name}/adv_corr"] = (a @ b).item() / denom if denom > 0 else 0.0
    return metrics


def stack_scores(scores: Mapping[str, Tensor]) -> tuple[list[str], Tensor]:
    """``(names, (R, B) tensor)``: the components in a fixed order, for one all-gather across ranks."""
    names = list(scores)
    return names, torch.stack([scores[n].detach().float() for n in names])
