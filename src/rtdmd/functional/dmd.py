"""Distribution-matching losses: the (sub-interval) DMD generator gradient, the fake-score regression and the
two-sample consistency regulariser of AC-DMD (spec sections 1, 4.4-4.6).

Every loss returns a per-sample tensor ``(B,)``; the training loop reduces it (mean over the batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rtdmd.functional.flow import expand_like, level
from rtdmd.functional.samplers import cps_step

# Renoising of a level-s sample (spec 4.2): tau ~ U[1000 s + RENOISE_OFFSET, TAU_TOP), clamped to TAU_CLAMP.
RENOISE_OFFSET = 10.0
TAU_CLAMP = (20.0, 980.0)
TAU_TOP = 1000.0
# Consistency regulariser (spec 4.5): t' = max(tau - delta, 0) / 1000, delta ~ U{1..CONSISTENCY_DELTA_MAX}.
CONSISTENCY_DELTA_MAX = 200


def dmd_gradient(x_s: Tensor, x_t: Tensor, v_teacher: Tensor, v_fake: Tensor, s: Tensor | float,
                 t: Tensor | float, eta: float, z: Tensor | None) -> Tensor:
    """Normalised sub-interval DMD gradient ``g`` with respect to the level-``s`` sample ``x_s`` (spec 4.6).

    Teacher and fake velocities at ``(x_t, t)`` are projected back to ``s`` with one shared noise ``z``;
    ``g = (x^F - x^T) / mean_{CHW} |x_s - x^T|``, with non-finite entries set to 0. At ``s = 0`` this is
    DMD2's ``(x0_fake - x0_real) / mean|x - x0_real|``. Zero when the fake equals the teacher.

    Shape: ``x_s, x_t, v_*, z: (B, ...)``; ``s, t``: scalars or ``(B,)``. Returns ``(B, ...)`` in float32.
    """
    with torch.no_grad():
        x_real = cps_step(x_t.float(), v_teacher.float(), t, s, eta, z if z is None else z.float())
        x_fake = cps_step(x_t.float(), v_fake.float(), t, s, eta, z if z is None else z.float())
        scale = (x_s.detach().float() - x_real).abs().flatten(1).mean(1)
        g = (x_fake - x_real) / expand_like(scale, x_real)
        return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def dmd_loss(x_s: Tensor, g: Tensor) -> Tensor:
    """``1/2 * mean_{CHW} (x_s - sg(x_s - g))^2`` per sample: its gradient in ``x_s`` is ``g / numel``."""
    target = (x_s.float() - g).detach()
    return 0.5 * ((x_s.float() - target) ** 2).flatten(1).mean(1)


def score_difference_gradient(v_fake: Tensor, v_teacher: Tensor, t: Tensor | float) -> Tensor:
    """Gradient of ``KL(p_theta,t || p_T,t)`` with respect to a clean sample ``x`` whose diffused version is
    ``x_t = (1 - t) * x + t * n``: ``(1 - t) * (s_F - s_T) = -(1 - t)^2 / t * (v_F - v_T)``.

    This is the unnormalised data-level DM gradient of the ``exact`` weighting (spec section 1): at small
    ``t`` it tends to ``grad log p_theta - grad log p_T``, on the same scale as ``grad r / beta``.
    Shape: ``(B, ...)``; ``t``: scalar or ``(B,)``.
    """
    t = expand_like(t, v_fake)
    return (-(1 - t) ** 2 / t * (v_fake.float() - v_teacher.float())).detach()


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """Solve ``A y = b`` for every sample by ``iters`` conjugate-gradient iterations, ``A`` symmetric positive
    definite per sample, given as ``apply(u) = A u``. Shape: ``b (B, ...)``; ``A`` acts on each sample alone."""
    def dot(a: Tensor, c: Tensor) -> Tensor:
        return (a * c).flatten(1).sum(1)

    y, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), dot(r, r)
    for _ in range(iters):
        ap = apply(p)
        alpha = torch.where(rs > 0, rs / dot(p, ap), torch.zeros_like(rs))
        y, r = y + expand_like(alpha, p) * p, r - expand_like(alpha, ap) * ap
        rs_next = dot(r, r)
        p = r + expand_like(torch.where(rs > 0, rs_next / rs, torch.zeros_like(rs)), p) * p
        rs = rs_next
    return y


def deconvolve_score_difference(g: Tensor, denoiser_jvp: Callable[[Tensor], Tensor], t: Tensor | float,
                                iters: int) -> Tensor:
    """The data-level score difference ``s_F(x) - s_T(x)`` from its level-``t`` estimate ``g`` (spec section 1).

    For Gaussian laws of equal covariance, ``g = (1 - t) E_n[(s_F,t - s_T,t)(x_t)] = (I + t^2 H_t) (s_F - s_T)(x)``
    with ``H_t`` the level-``t`` score Hessian: the level-``t`` term shrinks each direction of variance ``lambda``
    by ``lambda / (lambda + t^2 / (1 - t)^2)``, which moves the fixed point of DM + reward away from p~. And
    ``I + t^2 H_t = (1 - t) J_D`` with ``J_D = d D(x_t) / d x_t`` the Jacobian of the denoiser
    ``D(x_t) = x_t - t v(x_t, t)`` (Tweedie), so ``s_F - s_T = J_D^-1 g / (1 - t)``: exact for Gaussian components
    of equal covariance at any ``t``; for other laws a bias of order ``t^2`` times the curvature mismatch.

    ``denoiser_jvp(u) = J_D u`` (the teacher's); ``iters`` CG iterations solve the system. Shape: ``g (B, ...)``.
    """
    return conjugate_gradient(denoiser_jvp, g, iters) / (1 - expand_like(t, g))


def surrogate_loss(x: Tensor, g: Tensor) -> Tensor:
    """``sum_{CHW} sg(g) * x`` per sample: back-propagates ``g`` into ``x`` unscaled (``d/dx = g``)."""
    return (g.detach() * x.float()).flatten(1).sum(1)


def published_fake_weight(sigma_ts: Tensor) -> Tensor:
    """The published per-sample weight of the fake-score regression, ``min(1, 10 * sigma_ts^2)`` (spec 4.4): it
    discounts low noise."""
    return (10 * sigma_ts.float() ** 2).clamp(max=1.0)


def uniform_fake_weight(sigma_ts: Tensor) -> Tensor:
    """Weight 1 at every level: a fake score accurate at low noise too, as the exact DM term needs (spec 1)."""
    return torch.ones_like(sigma_ts, dtype=torch.float32)


def fake_score_loss(v_pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """``w_b * mean_{CHW} (F(x_t, t) - T)^2`` per sample (spec 4.4)."""
    return weight * ((v_pred.float() - target.float()) ** 2).flatten(1).mean(1)


def consistency_loss(h: Tensor, h1: Tensor, h2: Tensor | None = None) -> Tensor:
    """Consistency regulariser of AC-DMD (spec 4.5), per sample.

    Two-sample (unbiased): ``mean_{CHW} (h'_1 - h) * (h'_2 - h)``, whose expectation is
    ``||E[h' | x_t] - h||^2`` (the value of one batch can be negative). With ``h2=None`` the one-sample
    ``mean_{CHW} (h'_1 - h)^2``, biased upward by ``Var h'``.
    """
    d1 = (h1.float() - h.float()).flatten(1)
    d2 = d1 if h2 is None else (h2.float() - h.float()).flatten(1)
    return (d1 * d2).mean(1)


def forward_consistency_loss(h_up: Tensor, h: Tensor) -> Tensor:
    """``mean_{CHW} (h'' - sg(h))^2`` per sample: the fake's x0 prediction ``h''`` at a noisier level ``t''``,
    reached from ``x_t`` by the exact forward kernel, regressed onto its detached prediction ``h`` at ``t``.

    Unbiased where the published form (:func:`consistency_loss`) is not: x0 -> x_t -> x_t'' is Markov, so
    ``E[h*(x_t) | x_t''] = E[E[x0 | x_t] | x_t''] = h*(x_t'')`` for the true denoiser ``h*``, and the gradient of
    this regression with respect to ``h''`` vanishes there: the true score is a stationary point of the fake
    score's loss with the regulariser, whatever its weight.
    """
    return ((h_up.float() - h.detach().float()) ** 2).flatten(1).mean(1)


def sample_renoise_level(u: Tensor, s: Tensor | float, offset: float = RENOISE_OFFSET,
                         lo: float = TAU_CLAMP[0], hi: float = TAU_CLAMP[1], top: float = TAU_TOP) -> Tensor:
    """Renoising level ``t = tau / 1000`` with ``tau ~ U[1000 s + offset, top)`` clamped to ``[lo, hi]``, but never
    below ``1000 s + offset`` (spec 4.2); ``u ~ U[0, 1)`` is the caller's uniform draw of shape ``(B,)``."""
    start = 1000.0 * level(s, u.device) + offset
    tau = start + (top - start) * u.float()
    # The clamp never takes tau below the sub-interval's start: for s > (hi - offset) / 1000 (FLUX.1 above
    # ~1700 px puts its first level there) it would give t <= s, where no forward transition exists.
    return torch.maximum(tau.clamp(lo, hi), start) / 1000.0

