"""The losses of both stages as small objects, built once from the configuration.

The preset's choices (``paper`` or ``exact``: log-probability, advantages, policy reduction, DM term, BP loss,
fake-score weighting) are made here, by looking the configured names up in the tables below, so that the
training loops call these objects and never test a string. Each object takes role velocity functions
(:meth:`rtdmd.backbones.base.Backbone.role`), conditioning, samples and a :class:`~rtdmd.rng.Draw`, and returns
per-sample losses ``(B,)`` with a metrics dict; the loops reduce. The math itself lives in
:mod:`rtdmd.functional`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rtdmd.backbones.base import Cond, Velocity
from rtdmd.config import AlignConfig, DistillConfig
from rtdmd.functional import dmd, flow, grpo, reward_bp, samplers
from rtdmd.rewards.base import RewardSet
from rtdmd.rng import Draw

Losses = tuple[Tensor, dict[str, float]]

FAKE_WEIGHTS: dict[str, Callable[[Tensor], Tensor]] = {
    "min1_10s2": dmd.published_fake_weight,
    "uniform": dmd.uniform_fake_weight,
}
LOG_PROBS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "gaussian": samplers.gaussian_log_prob,
    "simplified": lambda x_next, mean, std: samplers.simplified_log_prob(x_next, mean),
}
# (per-step surrogates stacked (|S|, B), number of stochastic steps) -> per-sample policy loss (B,)
POLICY_REDUCTIONS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "mean": lambda terms, n_stochastic: terms.mean(0),  # published: average over the trained steps
    "unbiased_sum": lambda terms, n_stochastic: terms.sum(0) * n_stochastic / len(terms),
}
# (per-reward scores over the global batch, weights, group size, config, beta) -> advantages (B,)
ADVANTAGES: dict[str, Callable[..., Tensor]] = {
    "paper": lambda scores, weights, k, cfg, beta: grpo.advantages_paper(scores, weights, k, clip=cfg.advantage_clip),
    "exact": lambda scores, weights, k, cfg, beta: grpo.advantages_exact(scores, weights, k, beta),
}
# (weighted differentiable reward sum, config, beta) -> per-sample BP loss
BP_LOSSES: dict[str, Callable[[Tensor, AlignConfig, float], Tensor]] = {
    "hinge": lambda r, cfg, beta: reward_bp.reward_bp_loss_paper(r, cfg.bp_margin),
    "linear": lambda r, cfg, beta: reward_bp.reward_bp_loss_exact(r, beta),
}
EXACT_DM_SIGMA_RANGE = (0.02, 0.98)  # levels of the data-level DM term when none is configured


@dataclass(frozen=True)
class RenoiseLevels:
    """The renoising level ``t`` of a level-``s`` sample (spec 4.2): ``tau ~ U[1000 s + offset, 1000)`` clamped
    to ``clamp``, or ``t ~ U[lo, hi]`` when ``sigma_range`` is set (used at ``s = 0`` only)."""

    offset: float = dmd.RENOISE_OFFSET
    clamp: tuple[float, float] = dmd.TAU_CLAMP
    sigma_range: tuple[float, float] | None = None

    def __call__(self, u: Tensor, s: float) -> Tensor:
        if self.sigma_range is None:
            return dmd.sample_renoise_level(u, s, self.offset, *self.clamp)
        lo, hi = self.sigma_range
        return lo + (hi - lo) * u.float()


@dataclass(frozen=True)
class FakeScoreLoss:
    """AC-DMD's fake-score loss on a level-``s`` sample (spec 4.2-4.5): renoise to ``t``, regress the ambient
    target with weight ``weight(sigma_ts)``, plus ``gamma`` times the consistency regulariser."""

    eta: float
    weight: Callable[[Tensor], Tensor]
    levels: RenoiseLevels
    gamma: float
    two_sample: bool = True
    delta_max: int = dmd.CONSISTENCY_DELTA_MAX

    def __call__(self, fake: Velocity, cond: Cond, x_s: Tensor, s: float, draw: Draw) -> Losses:
        x_s = x_s.detach()
        t = self.levels(draw.rand("fake_t"), s)
        n = draw.randn("fake_n")
        x_t = flow.renoise(x_s, s, t, n)
        v = fake(x_t, t, cond)
        loss = dmd.fake_score_loss(v, flow.ambient_target(x_s, s, t, n),
                                   self.weight(flow.renoise_coefficients(s, t)[1]))
        metrics = {"fake_loss": loss.mean().item()}
        if self.gamma > 0:
            # Consistency (4.5): CPS steps t -> t' with the detached velocity, fake x0 predictions at t'.
            delta = (draw.rand("delta") * self.delta_max).floor() + 1
            t_next = (1000 * t - delta).clamp_min(0) / 1000
            copies = 2 if self.two_sample else 1
            x_next = torch.cat([samplers.cps_step(x_t, v.detach(), t, t_next, self.eta, draw.randn("cons_z", i))
                                for i in range(copies)])
            t_rep = t_next.repeat(copies)
            v_next = fake(x_next, t_rep, {k: torch.cat([c] * copies) for k, c in cond.items()})
            h_next = flow.x0_from_velocity(x_next, t_rep, v_next).chunk(copies)
            l_c = dmd.consistency_loss(flow.x0_from_velocity(x_t, t, v), *h_next)
            loss = loss + self.gamma * l_c
            metrics["consistency"] = l_c.mean().item()
        return loss, metrics


@dataclass(frozen=True)
class DMDLoss:
    """The normalised (sub-interval) DMD loss on a level-``s`` sample with gradient (spec 4.6); at ``s = 0``
    DMD2's."""

    eta: float
    levels: RenoiseLevels

    def __call__(self, teacher: Velocity, fake: Velocity, cond: Cond, x_s: Tensor, s: float, draw: Draw) -> Losses:
        t = self.levels(draw.rand("gen_t"), s)
        x_t = flow.renoise(x_s.detach(), s, t, draw.randn("gen_n"))
        with torch.no_grad():
            v_teacher, v_fake = teacher(x_t, t, cond), fake(x_t, t, cond)
        g = dmd.dmd_gradient(x_s, x_t, v_teacher, v_fake, s, t, self.eta, draw.randn("gen_z"))
        return dmd.dmd_loss(x_s, g), {"dmd_grad_norm": g.flatten(1).norm(dim=1).mean().item()}


@dataclass(frozen=True)
class ScoreDMLoss:
    """The unnormalised data-level DM term of the ``exact`` weighting on clean samples (spec section 1):
    back-propagates ``(1 - t)(s_F - s_T)(x_t)``, an estimate of ``grad_x KL(p_theta || p_T)``, into ``x``."""

    levels: RenoiseLevels

    def __call__(self, teacher: Velocity, fake: Velocity, cond: Cond, x: Tensor, s: float, draw: Draw) -> Losses:
        t = self.levels(draw.rand("gen_t"), 0.0)
        x_t = flow.interpolate(x.detach(), draw.randn("gen_n"), t)
        with torch.no_grad():
            v_teacher, v_fake = teacher(x_t, t, cond), fake(x_t, t, cond)
        g = dmd.score_difference_gradient(v_fake, v_teacher, t)
        return dmd.surrogate_loss(x, g), {"dm_grad_norm": g.flatten(1).norm(dim=1).mean().item()}


@dataclass(frozen=True)
class PolicyLoss:
    """SubGRPO's clipped surrogate on the trained steps ``S`` of a recorded rollout (spec 5.2-5.5), per sample:
    each step's log-probability is recomputed with gradient and compared with the behaviour's."""

    log_prob: Callable[[Tensor, Tensor, Tensor], Tensor]
    clip_range: float
    reduce: Callable[[Tensor, int], Tensor]

    def __call__(self, generator: Velocity, cond: Cond, traj: samplers.Trajectory, sigmas: Tensor, eta: float,
                 trained: Sequence[int], advantages: Tensor) -> Losses:
        terms, clipped = [], []
        for k in trained:
            x_k, sigma, sigma_next = traj.states[k], float(sigmas[k]), float(sigmas[k + 1])
            v = generator(x_k, torch.full((x_k.shape[0],), sigma, device=x_k.device), cond)
            mean, std = samplers.cps_mean_std(x_k, v, sigma, sigma_next, eta)
            log_prob = self.log_prob(traj.states[k + 1], mean, std)
            log_prob_old = self.log_prob(traj.states[k + 1], traj.means[k], traj.stds[k])
            loss, was_clipped = grpo.clipped_policy_loss(log_prob, log_prob_old, advantages, self.clip_range)
            terms.append(loss)
            clipped.append(was_clipped.float())
        per_sample = self.reduce(torch.stack(terms), len(sigmas) - 2)
        return per_sample, {"clip_fraction": torch.stack(clipped).mean().item()}


@dataclass(frozen=True)
class RewardBP:
    """Reward back-propagation through the deterministic last step (spec 5.6): the differentiable rewards of the
    decoded final samples, weighted and scaled for the BP path, into a per-sample loss."""

    rewards: RewardSet
    loss: Callable[[Tensor], Tensor]

    def __call__(self, images: Tensor, texts: Sequence[str], metadata: Sequence[Mapping]) -> Tensor:
        r = sum(e.weight * e.bp_scale * e.reward(images, texts, metadata) for e in self.rewards.differentiable)
        return self.loss(r)


@dataclass(frozen=True)
class Stage1Objective:
    fake: FakeScoreLoss
    generator: DMDLoss


@dataclass(frozen=True)
class Stage2Objective:
    """Every term of stage 2, already chosen: absent terms are None. ``dm_replay``: the DM gradient flows through
    the whole rollout replayed with gradient, not only through the last step."""

    fake: FakeScoreLoss
    advantages: Callable[[Mapping[str, Tensor], Mapping[str, float], int], Tensor]
    policy: PolicyLoss | None
    dm: DMDLoss | ScoreDMLoss | None
    dm_replay: bool
    bp: RewardBP | None
    policy_weight: float
    dm_weight: float
    bp_weight: float


def stage1(cfg: DistillConfig) -> Stage1Objective:
    levels = RenoiseLevels(cfg.renoise_offset, cfg.tau_clamp)
    fake = FakeScoreLoss(cfg.eta, FAKE_WEIGHTS[cfg.fake_weighting], levels, cfg.consistency_gamma,
                         cfg.consistency_estimator == "two_sample", cfg.consistency_delta_max)
    return Stage1Objective(fake, DMDLoss(cfg.eta, levels))


def stage2(cfg: AlignConfig, beta: float, rewards: RewardSet) -> Stage2Objective:
    """The stage-2 terms of ``cfg`` (whose preset-dependent fields the config loader has filled in)."""
    levels = RenoiseLevels(sigma_range=cfg.dm_sigma_range)
    fake = FakeScoreLoss(cfg.eta, FAKE_WEIGHTS[cfg.fake_weighting], levels, cfg.fake_consistency_gamma)
    policy = PolicyLoss(LOG_PROBS[cfg.log_prob], cfg.ppo_clip, POLICY_REDUCTIONS[cfg.policy_reduction])
    if cfg.dm_loss == "dmd":
        dm = DMDLoss(cfg.eta, levels)
    else:
        dm = ScoreDMLoss(RenoiseLevels(sigma_range=cfg.dm_sigma_range or EXACT_DM_SIGMA_RANGE))
    bp_loss = BP_LOSSES[cfg.bp_loss]
    bp = RewardBP(rewards, lambda r: bp_loss(r, cfg, beta)) if cfg.bp and rewards.differentiable else None
    advantage = ADVANTAGES[cfg.advantages]
    return Stage2Objective(
        fake=fake, advantages=lambda scores, weights, k: advantage(scores, weights, k, cfg, beta),
        policy=policy if cfg.policy else None, dm=dm if cfg.dm else None, dm_replay=cfg.dm_backprop == "full",
        bp=bp, policy_weight=cfg.policy_weight, dm_weight=cfg.dm_weight, bp_weight=cfg.bp_weight)
