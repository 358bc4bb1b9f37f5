"""Step functions shared by both training loops: rollouts, the fake-score loss, the DMD generator loss and the
pieces of the stage-2 update. They take built objects and scalars, never a config, and return per-sample
losses ``(B,)`` with a metrics dict; the loops reduce."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from rtdmd.backbones.base import Backbone, Cond, concat_cond
from rtdmd.functional import dmd, flow, grpo, samplers
from rtdmd.rng import Streams


@dataclass
class Draw:
    """Per-sample random numbers of one iteration: row ``j`` is keyed by the global sample index
    ``indices[j]``, so every draw is independent of the rank that makes it and of the number of ranks."""

    streams: Streams
    step: int
    indices: Sequence[int]
    shape: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype = torch.float32

    def randn(self, *name: object) -> Tensor:
        return self.streams.randn((*name, self.step), self.indices, self.shape, device=self.device, dtype=self.dtype)

    def rand(self, *name: object) -> Tensor:
        return self.streams.rand((*name, self.step), self.indices, device=self.device)

    def fork(self, tag: object) -> Draw:
        """Independent draws for a repeated use within one iteration (e.g. the r-th fake update)."""
        return dataclasses.replace(self, step=(self.step, tag))


def levels(value: float, batch: int, device: torch.device) -> Tensor:
    return torch.full((batch,), float(value), device=device)


def cps_rollout(backbone: Backbone, role: str, cond: Cond, x: Tensor, sigmas: Tensor, eta: float,
                noise: Callable[[int], Tensor], stop: int, grad_last: bool = False) -> Tensor:
    """``stop`` CPS steps of ``role`` from ``x`` at ``sigmas[0]``; only the last step may keep gradients
    (spec 4.1). ``noise(i)`` gives the injected noise of step ``i``."""
    def step(i: int, x: Tensor) -> Tensor:
        v = backbone.velocity(role, x, levels(sigmas[i], x.shape[0], x.device), cond)
        return samplers.cps_step(x, v, float(sigmas[i]), float(sigmas[i + 1]), eta, noise(i))

    with torch.no_grad():
        for i in range(stop - 1):
            x = step(i, x)
    with torch.set_grad_enabled(grad_last):
        return step(stop - 1, x)


def renoise_levels(u: Tensor, s: float, sigma_range: tuple[float, float] | None, offset: float = 10.0,
                   clamp: tuple[float, float] = (20.0, 980.0)) -> Tensor:
    """``t`` for renoising a level-``s`` sample: the spec's ``tau ~ U[1000 s + offset, 1000)`` clamped (4.2), or
    ``U[lo, hi]`` when ``sigma_range`` is given (s = 0 only)."""
    if sigma_range is None:
        return dmd.sample_renoise_level(u, s, offset, *clamp)
    lo, hi = sigma_range
    return lo + (hi - lo) * u.float()


def fake_score_loss(backbone: Backbone, cond: Cond, x_s: Tensor, s: float, draw: Draw, *, eta: float,
                    weighting: str, gamma: float, estimator: str, delta_max: int,
                    sigma_range: tuple[float, float] | None = None, offset: float = 10.0,
                    clamp: tuple[float, float] = (20.0, 980.0)) -> tuple[Tensor, dict[str, float]]:
    """AC-DMD fake-score loss on a level-``s`` sample (spec 4.2-4.5): renoise to ``t``, regress the ambient
    target with weight ``w(sigma_ts)``, plus ``gamma`` times the consistency regulariser."""
    x_s = x_s.detach()
    t = renoise_levels(draw.rand("fake_t"), s, sigma_range, offset, clamp)
    n = draw.randn("fake_n")
    x_t = flow.renoise(x_s, s, t, n)
    target = flow.ambient_target(x_s, s, t, n)
    v = backbone.velocity("fake", x_t, t, cond)
    weight = dmd.fake_score_weight(flow.renoise_coefficients(s, t)[1], weighting)
    loss = dmd.fake_score_loss(v, target, weight)
    metrics = {"fake_loss": loss.mean().item()}
    if gamma > 0:
        # Consistency (4.5): two CPS steps t -> t' with the detached velocity, fake x0 predictions at t'.
        delta = (draw.rand("delta") * delta_max).floor() + 1
        t_next = (1000 * t - delta).clamp_min(0) / 1000
        copies = 2 if estimator == "two_sample" else 1
        x_next = torch.cat([samplers.cps_step(x_t, v.detach(), t, t_next, eta, draw.randn("cons_z", i))
                            for i in range(copies)])
        t_rep = t_next.repeat(copies)
        v_next = backbone.velocity("fake", x_next, t_rep, concat_cond([cond] * copies))
        h = flow.x0_from_velocity(x_t, t, v)
        h_next = flow.x0_from_velocity(x_next, t_rep, v_next).chunk(copies)
        l_c = dmd.consistency_loss(h, h_next[0], h_next[1] if copies == 2 else None)
        loss = loss + gamma * l_c
        metrics["consistency"] = l_c.mean().item()
    return loss, metrics


def generator_dmd_loss(backbone: Backbone, cond: Cond, x_s: Tensor, s: float, draw: Draw, *, eta: float,
                       sigma_range: tuple[float, float] | None = None, offset: float = 10.0,
                       clamp: tuple[float, float] = (20.0, 980.0)) -> tuple[Tensor, dict[str, float]]:
    """Normalised (sub-interval) DMD loss on ``x_s`` with gradient (spec 4.6)."""
    t = renoise_levels(draw.rand("gen_t"), s, sigma_range, offset, clamp)
    x_t = flow.renoise(x_s.detach(), s, t, draw.randn("gen_n"))
    with torch.no_grad():
        v_teacher = backbone.velocity("teacher", x_t, t, cond)
        v_fake = backbone.velocity("fake", x_t, t, cond)
    g = dmd.dmd_gradient(x_s, x_t, v_teacher, v_fake, s, t, eta, draw.randn("gen_z"))
    return dmd.dmd_loss(x_s, g), {"dmd_grad_norm": g.flatten(1).norm(dim=1).mean().item()}


def score_dm_loss(backbone: Backbone, cond: Cond, x: Tensor, draw: Draw,
                  sigma_range: tuple[float, float]) -> tuple[Tensor, dict[str, float]]:
    """Unnormalised data-level DM term of the ``exact`` weighting on clean samples ``x`` (spec section 1):
    back-propagates ``(1 - t)(s_F - s_T)(x_t)`` into ``x``, an estimate of ``grad_x KL(p_theta || p_T)``."""
    t = renoise_levels(draw.rand("gen_t"), 0.0, sigma_range)
    x_t = flow.interpolate(x.detach(), draw.randn("gen_n"), t)
    with torch.no_grad():
        v_teacher = backbone.velocity("teacher", x_t, t, cond)
        v_fake = backbone.velocity("fake", x_t, t, cond)
    g = dmd.score_difference_gradient(v_fake, v_teacher, t)
    return dmd.surrogate_loss(x, g), {"dm_grad_norm": g.flatten(1).norm(dim=1).mean().item()}


# -- stage 2 -------------------------------------------------------------------------------------------------

@dataclass
class Trajectory:
    """One stage-2 rollout (spec 5.1): ``states[i]`` is the input of step ``i`` (at ``sigmas[i]``), ``noises[i]``
    the noise step ``i`` injected (None for the deterministic last step), ``log_probs[i]`` the behaviour
    log-probability of the transition of each trained step ``i``; ``final`` the clean sample."""

    states: list[Tensor]
    noises: list[Tensor | None]
    log_probs: dict[int, Tensor]
    final: Tensor

    def rows(self, index: slice) -> Trajectory:
        return Trajectory([s[index] for s in self.states], [z if z is None else z[index] for z in self.noises],
                          {k: v[index] for k, v in self.log_probs.items()}, self.final[index])


def step_log_prob(kind: str, x_next: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-step log-probability: exact Gaussian, or the simplified ``-mean_d (x_next - mean)^2`` (spec 5.2)."""
    if kind == "gaussian":
        return samplers.gaussian_log_prob(x_next, mean, std)
    return samplers.simplified_log_prob(x_next, mean)


@torch.no_grad()
def rl_rollout(backbone: Backbone, cond: Cond, x: Tensor, sigmas: Tensor, eta: float,
               noise: Callable[[int], Tensor], trained: Sequence[int], log_prob: str) -> Trajectory:
    """Stochastic CPS steps, then the deterministic last step to sigma = 0, storing what the update needs."""
    n = len(sigmas) - 1
    states, noises, log_probs = [], [], {}
    for i in range(n):
        states.append(x)
        v = backbone.velocity("generator", x, levels(sigmas[i], x.shape[0], x.device), cond)
        if i == n - 1:
            x = flow.x0_from_velocity(x, float(sigmas[i]), v)
            noises.append(None)
            continue
        mean, std = samplers.cps_mean_std(x, v, float(sigmas[i]), float(sigmas[i + 1]), eta)
        z = noise(i)
        x = (mean + std * z).to(x.dtype)
        noises.append(z)
        if i in trained:
            log_probs[i] = step_log_prob(log_prob, x, mean, std)
    return Trajectory(states, noises, log_probs, x)


def policy_loss(backbone: Backbone, cond: Cond, traj: Trajectory, sigmas: Tensor, eta: float,
                trained: Sequence[int], advantages: Tensor, *, log_prob: str, clip_range: float,
                reduction: str) -> tuple[Tensor, dict[str, float]]:
    """SubGRPO's clipped surrogate on the trained steps (spec 5.3-5.5), per sample. ``reduction="mean"``
    averages over the trained steps; ``"unbiased_sum"`` sums and scales by (#stochastic / #trained)."""
    terms, clipped = [], []
    for k in trained:
        x_k = traj.states[k]
        v = backbone.velocity("generator", x_k, levels(sigmas[k], x_k.shape[0], x_k.device), cond)
        mean, std = samplers.cps_mean_std(x_k, v, float(sigmas[k]), float(sigmas[k + 1]), eta)
        logp = step_log_prob(log_prob, traj.states[k + 1], mean, std)
        loss, was_clipped = grpo.clipped_policy_loss(logp, traj.log_probs[k], advantages, clip_range)
        terms.append(loss)
        clipped.append(was_clipped.float())
    stacked = torch.stack(terms)
    n_stochastic = len(sigmas) - 2
    per_sample = stacked.mean(0) if reduction == "mean" else stacked.sum(0) * n_stochastic / len(trained)
    return per_sample, {"clip_fraction": torch.stack(clipped).mean().item()}


def final_step(backbone: Backbone, cond: Cond, x_last: Tensor, sigma_last: float) -> Tensor:
    """The deterministic last step ``x_final = s - sigma * v_theta(s)`` with ``s`` held fixed (spec 5.6)."""
    x_last = x_last.detach()
    v = backbone.velocity("generator", x_last, levels(sigma_last, x_last.shape[0], x_last.device), cond)
    return flow.x0_from_velocity(x_last, sigma_last, v)


def replay_with_grad(backbone: Backbone, cond: Cond, traj: Trajectory, sigmas: Tensor, eta: float) -> Tensor:
    """The same rollout (same initial state and noises) with gradients through every step: the
    reparameterised sample, for a DM gradient through the whole generator."""
    x = traj.states[0].detach()
    for i, z in enumerate(traj.noises):
        v = backbone.velocity("generator", x, levels(sigmas[i], x.shape[0], x.device), cond)
        x = samplers.cps_step(x, v, float(sigmas[i]), float(sigmas[i + 1]), eta, z)
    return x

