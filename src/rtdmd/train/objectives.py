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
from rtdmd.errors import UserError
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
# (trained steps |S|, stochastic steps) -> (weight of each trained step's policy term, weight of the final step's
# DM + BP term)
STEP_WEIGHTS: dict[str, Callable[[int, int], tuple[float, float]]] = {
    # published: every step with a term divided by |S u {last}| = |S| + 1 (the normaliser of the public code)
    "published": lambda n_trained, n_stochastic: (1 / (n_trained + 1), 1 / (n_trained + 1)),
    # unbiased: each step is trained with probability |S| / n, so the sum is scaled back; the last step's terms
    # are the pathwise part of grad E[r] / beta and the DM gradient, weight 1
    "unbiased": lambda n_trained, n_stochastic: (n_stochastic / n_trained, 1.0),
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
    forward_kernel: bool = False  # the unbiased regulariser (dmd.forward_consistency_loss), not the published one

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
            delta = (draw.rand("delta") * self.delta_max).floor() + 1
            l_c = (self.forward_consistency if self.forward_kernel else self.published_consistency)(
                fake, cond, x_t, t, v, delta, draw)
            loss = loss + self.gamma * l_c
            metrics["consistency"] = l_c.mean().item()
        return loss, metrics


    def published_consistency(self, fake: Velocity, cond: Cond, x_t: Tensor, t: Tensor, v: Tensor, delta: Tensor,
                              draw: Draw) -> Tensor:
        """Spec 4.5: CPS steps t -> t' = (tau - delta) / 1000 with the detached velocity, the fake's x0 predictions
        at t' against its prediction at t (two samples: an unbiased estimate of the squared bias)."""
        t_next = (1000 * t - delta).clamp_min(0) / 1000
        copies = 2 if self.two_sample else 1
        x_next = torch.cat([samplers.cps_step(x_t, v.detach(), t, t_next, self.eta, draw.randn("cons_z", i))
                            for i in range(copies)])
        t_rep = t_next.repeat(copies)
        v_next = fake(x_next, t_rep, {k: torch.cat([c] * copies) for k, c in cond.items()})
        h_next = flow.x0_from_velocity(x_next, t_rep, v_next).chunk(copies)
        return dmd.consistency_loss(flow.x0_from_velocity(x_t, t, v), *h_next)

    def forward_consistency(self, fake: Velocity, cond: Cond, x_t: Tensor, t: Tensor, v: Tensor, delta: Tensor,
                            draw: Draw) -> Tensor:
        """The unbiased form: the exact forward kernel t -> t'' = (tau + delta) / 1000 (at most the top of the
        clamp), the fake's x0 prediction there regressed onto its detached prediction at t."""
        t_up = torch.maximum((1000 * t + delta).clamp_max(dmd.TAU_CLAMP[1]), 1000 * t) / 1000
        x_up = flow.renoise(x_t, t, t_up, draw.randn("cons_n"))
        h_up = flow.x0_from_velocity(x_up, t_up, fake(x_up, t_up, cond))
        return dmd.forward_consistency_loss(h_up, flow.x0_from_velocity(x_t, t, v))


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
    back-propagates ``(1 - t)(s_F - s_T)(x_t)``, an estimate of ``grad_x KL(p_theta || p_T)``, into ``x``. With
    ``deconvolution`` conjugate-gradient iterations, the level-``t`` shrinkage of that estimate is undone through
    the teacher denoiser's Jacobian (:func:`rtdmd.functional.dmd.deconvolve_score_difference`)."""

    levels: RenoiseLevels
    deconvolution: int = 0

    def __call__(self, teacher: Velocity, fake: Velocity, cond: Cond, x: Tensor, s: float, draw: Draw) -> Losses:
        t = self.levels(draw.rand("gen_t"), 0.0)
        x_t = flow.interpolate(x.detach(), draw.randn("gen_n"), t)
        with torch.no_grad():
            v_fake = fake(x_t, t, cond)
        if not self.deconvolution:
            with torch.no_grad():
                g = dmd.score_difference_gradient(v_fake, teacher(x_t, t, cond), t)
        else:
            x_in = x_t.detach().requires_grad_(True)
            with torch.enable_grad():
                v_teacher = teacher(x_in, t, cond)
            g = dmd.score_difference_gradient(v_fake, v_teacher.detach(), t)

            def denoiser_jvp(u: Tensor) -> Tensor:  # J_D u = u - t J_v u (J_v symmetric for a true velocity)
                (jv,) = torch.autograd.grad(v_teacher, x_in, grad_outputs=u.to(v_teacher.dtype), retain_graph=True)
                return u - flow.expand_like(t, u) * jv.float()

            g = dmd.deconvolve_score_difference(g, denoiser_jvp, t, self.deconvolution).detach()
        return dmd.surrogate_loss(x, g), {"dm_grad_norm": g.flatten(1).norm(dim=1).mean().item()}


@dataclass(frozen=True)
class PolicyLoss:
    """SubGRPO's clipped surrogate on the trained steps ``S`` of a recorded rollout (spec 5.2-5.5), per sample,
    each trained step weighted by ``step_weight``. Each step's log-probability is recomputed with gradient; the
    ratio's old log-probability is the rollout's (``recompute_old=False``, published) or the recomputed one
    without gradient (on-policy: the ratio is exactly 1, so numerical differences between rollout and update,
    bf16 or another kernel, clip nothing). ``clip_fraction`` is measured against the rollout either way."""

    log_prob: Callable[[Tensor, Tensor, Tensor], Tensor]
    clip_range: float
    step_weight: float
    recompute_old: bool = False

    def __call__(self, generator: Velocity, cond: Cond, traj: samplers.Trajectory, sigmas: Tensor, eta: float,
                 trained: Sequence[int], advantages: Tensor) -> Losses:
        terms, clipped = [], []
        for k in trained:
            x_k, sigma, sigma_next = traj.states[k], float(sigmas[k]), float(sigmas[k + 1])
            v = generator(x_k, torch.full((x_k.shape[0],), sigma, device=x_k.device), cond)
            mean, std = samplers.cps_mean_std(x_k, v, sigma, sigma_next, eta)
            log_prob = self.log_prob(traj.states[k + 1], mean, std)
            behaviour = self.log_prob(traj.states[k + 1], traj.means[k], traj.stds[k])
            old = log_prob.detach() if self.recompute_old else behaviour
            loss, _ = grpo.clipped_policy_loss(log_prob, old, advantages, self.clip_range)
            terms.append(loss)
            clipped.append(grpo.clipped_policy_loss(log_prob.detach(), behaviour, advantages, self.clip_range)[1])
        per_sample = self.step_weight * torch.stack(terms).sum(0)
        return per_sample, {"clip_fraction": torch.stack(clipped).float().mean().item()}


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
    the whole rollout replayed with gradient, not only through the last step. ``final_step_weight`` multiplies
    the final step's DM and BP terms (the policy terms carry their step weight in ``policy``)."""

    fake: FakeScoreLoss
    advantages: Callable[[Mapping[str, Tensor], Mapping[str, float], int], Tensor]
    policy: PolicyLoss | None
    dm: DMDLoss | ScoreDMLoss | None
    dm_replay: bool
    bp: RewardBP | None
    policy_weight: float
    dm_weight: float
    bp_weight: float
    final_step_weight: float = 1.0


def check_renoise_room(sigmas: Tensor, offset: float) -> None:
    """Every level a random stop can end at must leave room to renoise above it (``1000 s + offset < 1000``);
    a one-line error otherwise (a FLUX.1 schedule at extreme resolutions)."""
    for s in sigmas[1:-1].tolist():
        if 1000 * s + offset >= dmd.TAU_TOP:
            raise UserError(f"the generator level {s:.4f} (distill.step_list through the backbone's shift) leaves no "
                            f"room to renoise above it (tau ~ U[1000 s + {offset:g}, 1000)): lower the resolution or "
                            f"use smaller steps in distill.step_list")


def stage1(cfg: DistillConfig) -> Stage1Objective:
    levels = RenoiseLevels(cfg.renoise_offset, cfg.tau_clamp)
    fake = FakeScoreLoss(cfg.eta, FAKE_WEIGHTS[cfg.fake_weighting], levels, cfg.consistency_gamma,
                         cfg.consistency_estimator == "two_sample", cfg.consistency_delta_max,
                         cfg.consistency_kernel == "forward")
    return Stage1Objective(fake, DMDLoss(cfg.eta, levels))


def stage2(cfg: AlignConfig, beta: float, rewards: RewardSet) -> Stage2Objective:
    """The stage-2 terms of ``cfg`` (whose preset-dependent fields the config loader has filled in)."""
    levels = RenoiseLevels(sigma_range=cfg.dm_sigma_range)
    fake = FakeScoreLoss(cfg.eta, FAKE_WEIGHTS[cfg.fake_weighting], levels, cfg.fake_consistency_gamma)
    policy_step, final_step = STEP_WEIGHTS[cfg.step_weighting](cfg.subset_size, len(cfg.step_list) - 1)
    policy = PolicyLoss(LOG_PROBS[cfg.log_prob], cfg.ppo_clip, policy_step, cfg.old_log_prob == "recomputed")
    if cfg.dm_loss == "dmd":
        dm = DMDLoss(cfg.eta, levels)
    else:
        dm = ScoreDMLoss(RenoiseLevels(sigma_range=cfg.dm_sigma_range or EXACT_DM_SIGMA_RANGE), cfg.dm_deconvolution)
    bp_loss = BP_LOSSES[cfg.bp_loss]
    bp = RewardBP(rewards, lambda r: bp_loss(r, cfg, beta)) if cfg.bp and rewards.differentiable else None
    advantage = ADVANTAGES[cfg.advantages]
    return Stage2Objective(
        fake=fake, advantages=lambda scores, weights, k: advantage(scores, weights, k, cfg, beta),
        policy=policy if cfg.policy else None, dm=dm if cfg.dm else None, dm_replay=cfg.dm_backprop == "full",
        bp=bp, policy_weight=cfg.policy_weight, dm_weight=cfg.dm_weight, bp_weight=cfg.bp_weight,
        final_step_weight=final_step)
