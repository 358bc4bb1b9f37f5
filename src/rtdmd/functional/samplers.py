"""The CPS transition, the rollout and per-step log-probabilities (spec sections 3 and 5.1-5.2).

``Phi_eta(x, v; a -> b; z) = (1 - b) * x0_hat + b * cos(theta) * eps_hat + b * sin(theta) * z`` with
``theta = eta * pi / 2``: mean ``mu = (1 - b) * x0_hat + b * cos(theta) * eps_hat``, isotropic std
``rho = b * sin(theta)``. ``eta = 0`` is the deterministic (Euler / DDIM-like) step; ``b = 0`` returns ``x0_hat``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rtdmd.functional.flow import eps_from_velocity, expand_like, level, x0_from_velocity

VelocityFn = Callable[[Tensor, Tensor, Any], Tensor]
"""``velocity(x, sigma, cond) -> v`` with ``sigma`` of shape ``(B,)``; ``cond`` is opaque here (a backbone's
conditioning dict, or anything the caller's velocity takes)."""
NoiseFn = Callable[[int], Tensor]
"""``noise(step_index) -> z`` shaped like ``x``: the injected noise of that step."""


def cps_angles(eta: float) -> tuple[float, float]:
    """``(cos theta, sin theta)`` for ``theta = eta * pi / 2``; exact at eta = 0 and 1."""
    if eta == 0:
        return 1.0, 0.0
    if eta == 1:
        return 0.0, 1.0
    theta = eta * math.pi / 2
    return math.cos(theta), math.sin(theta)


def cps_mean_std(x: Tensor, v: Tensor, sigma: Tensor | float, sigma_next: Tensor | float,
                 eta: float) -> tuple[Tensor, Tensor]:
    """Mean ``mu`` and std ``rho`` of the CPS transition from level ``sigma`` to ``sigma_next``.

    Shape: ``x, v: (B, ...)``; levels scalars or ``(B,)``. Returns ``mu`` like ``x`` and ``rho`` as a float32
    tensor broadcastable against ``x``.
    """
    cos_t, sin_t = cps_angles(eta)
    b = expand_like(sigma_next, x)
    mean = (1 - b) * x0_from_velocity(x, sigma, v) + b * cos_t * eps_from_velocity(x, sigma, v)
    return mean.to(x.dtype), b * sin_t


def cps_transition(x: Tensor, v: Tensor, sigma: Tensor | float, sigma_next: Tensor | float, eta: float,
                   noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One CPS step and its law: ``(x_next, mu, rho)`` with ``x_next = mu + rho * noise`` (spec section 3).

    ``noise`` may be None only when the step is deterministic (``eta = 0`` or ``sigma_next = 0``).
    """
    mean, std = cps_mean_std(x, v, sigma, sigma_next, eta)
    if noise is None:
        if bool((std != 0).any()):
            raise ValueError("a stochastic CPS step (eta > 0, sigma_next > 0) needs noise")
        return mean, mean, std
    return (mean + std * noise).to(x.dtype), mean, std


def cps_step(x: Tensor, v: Tensor, sigma: Tensor | float, sigma_next: Tensor | float, eta: float,
             noise: Tensor | None) -> Tensor:
    """One coefficient-preserving step ``Phi_eta(x, v; sigma -> sigma_next; noise)`` (spec section 3)."""
    return cps_transition(x, v, sigma, sigma_next, eta, noise)[0]


@dataclass
class Trajectory:
    """What a recorded :func:`rollout` saw: ``states[i]`` is the input of step ``i`` (``states[-1]`` the result),
    ``noises[i]`` the noise step ``i`` injected (None on a deterministic step), ``means[i]`` / ``stds[i]`` its
    transition's mean and std (spec 5.1: what a policy gradient needs)."""

    states: list[Tensor] = field(default_factory=list)
    noises: list[Tensor | None] = field(default_factory=list)
    means: list[Tensor] = field(default_factory=list)
    stds: list[Tensor] = field(default_factory=list)

    @property
    def final(self) -> Tensor:
        return self.states[-1]

    def rows(self, index: slice) -> Trajectory:
        """The same trajectory for the samples ``index`` only."""
        pick = lambda t: t if t is None or t.ndim == 0 or t.shape[0] == 1 else t[index]  # noqa: E731
        return Trajectory([s[index] for s in self.states], [pick(z) for z in self.noises],
                          [m[index] for m in self.means], [pick(s) for s in self.stds])


def rollout(velocity: VelocityFn, x: Tensor, sigmas: Tensor, eta: float, noise: NoiseFn | None = None,
            cond: Any = None, *, stop: int | None = None, grad_from: int = 0,
            record: Trajectory | None = None) -> Tensor:
    """CPS steps of ``velocity`` from ``x`` at ``sigmas[0]`` down the schedule (spec sections 3, 4.1, 5.1).

    The one sampler of the project: inference, both training stages and (step by step) the diffusers
    :class:`~rtdmd.scheduler.CPSScheduler` use it or its :func:`cps_step`. With ``eta = 0`` it is the Euler ODE
    sampler of diffusers' flow-match scheduler.

    Args:
        velocity: ``velocity(x, sigma, cond) -> v``, ``sigma`` of shape ``(B,)``.
        noise: ``noise(i) -> z`` shaped like ``x``, drawn only on stochastic steps (``eta > 0`` and a next level
            above 0); may be None when every step is deterministic.
        stop: the number of steps to take (default: all, ending at ``sigmas[-1]``): AC-DMD's random stop.
        grad_from: steps before this index run without gradient (4.1: only the last executed step keeps them);
            the others run in the caller's grad mode.
        record: a :class:`Trajectory` that receives every state, noise and transition.
    """
    steps = len(sigmas) - 1 if stop is None else stop
    if record is not None:
        record.states.append(x)
    for i in range(steps):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and i >= grad_from):
            v = velocity(x, torch.full((x.shape[0],), sigma, device=x.device), cond)
            z = noise(i) if noise is not None and eta > 0 and sigma_next > 0 else None
            x, mean, std = cps_transition(x, v, sigma, sigma_next, eta, z)
        if record is not None:
            record.states.append(x)
            record.noises.append(z)
            record.means.append(mean)
            record.stds.append(std)
    return x


def gaussian_log_prob(x_next: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """Exact ``log N(x_next; mean, std^2 I)`` summed over all but the batch dim. Shape: ``(B, ...) -> (B,)``."""
    std = level(std, x_next.device).flatten()  # (1,) or (B,)
    diff = (x_next.float() - mean.float()).flatten(1)
    dim = diff.shape[1]
    return -0.5 * (diff**2).sum(1) / std**2 - dim * torch.log(std) - 0.5 * dim * math.log(2 * math.pi)


def simplified_log_prob(x_next: Tensor, mean: Tensor) -> Tensor:
    """Flow-GRPO's simplified log-probability ``-mean_d (x_next - mean)^2``; its gradient in ``mean`` is the
    exact one times ``2 * rho^2 / D`` (spec 5.2). Shape: ``(B, ...) -> (B,)``."""
    return -((x_next.float() - mean.float()) ** 2).flatten(1).mean(1)
