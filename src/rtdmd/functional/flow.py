"""Rectified-flow identities and the sub-interval (s -> t) transition of AC-DMD (spec sections 0, 4.2, 4.3).

Levels ``sigma``, ``s``, ``t`` may be Python floats or tensors of shape ``(B,)`` (one level per sample).
Coefficients are computed in float32 (float64 if given) whatever the dtype of ``x`` (spec section 0); the
results are cast back to the dtype of ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def level(values: Tensor | float, device: torch.device | None = None) -> Tensor:
    """A noise level (or any scalar coefficient) as a float32 tensor; float64 input stays float64."""
    values = torch.as_tensor(values, device=device)
    return values if values.dtype == torch.float64 else values.float()


def expand_like(values: Tensor | float, x: Tensor) -> Tensor:
    """Per-sample values ``(B,)`` (or a scalar) reshaped to broadcast against ``x`` of shape ``(B, ...)``."""
    values = level(values, x.device)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (x.ndim - 1)))


def interpolate(x0: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """``x_sigma = (1 - sigma) * x0 + sigma * eps``."""
    sigma = expand_like(sigma, x0)
    return ((1 - sigma) * x0 + sigma * eps).to(x0.dtype)


def x0_from_velocity(x: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    """``x0_hat = x - sigma * v``."""
    return (x - expand_like(sigma, x) * v).to(x.dtype)


def eps_from_velocity(x: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    """``eps_hat = x + (1 - sigma) * v``."""
    return (x + (1 - expand_like(sigma, x)) * v).to(x.dtype)


def score_from_velocity(x: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    """Score of the diffused law, ``grad log p_sigma(x) = -(x + (1 - sigma) * v) / sigma`` for sigma > 0."""
    return -eps_from_velocity(x, sigma, v) / expand_like(sigma, x)


def renoise_coefficients(s: Tensor | float, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Coefficients of the exact forward transition from level ``s`` to a noisier level ``t`` (spec 4.2).

    Returns ``(a, sigma_ts)``: ``a = (1 - t) / (1 - s)`` and ``sigma_ts = sqrt(t^2 - a^2 * s^2)``, so that
    ``x_t = a * x_s + sigma_ts * n`` has the law of level ``t`` whenever ``x_s`` has the law of level ``s``.
    """
    s, t = level(s), level(t)
    s, t = torch.broadcast_tensors(s.to(t.device), t)
    a = (1 - t) / (1 - s)
    sigma_ts = (t**2 - a**2 * s**2).clamp_min(0).sqrt()
    return a, sigma_ts


def renoise(x_s: Tensor, s: Tensor | float, t: Tensor | float, n: Tensor) -> Tensor:
    """``x_t = a * x_s + sigma_ts * n``: take a level-``s`` sample to level ``t`` (spec 4.2)."""
    a, sigma_ts = renoise_coefficients(s, t)
    return (expand_like(a, x_s) * x_s + expand_like(sigma_ts, x_s) * n).to(x_s.dtype)


def ambient_target(x_s: Tensor, s: Tensor | float, t: Tensor | float, n: Tensor) -> Tensor:
    """Ambient (unbiased) velocity target of the fake score, built from the noisy ``x_s`` (spec 4.3).

    ``T = -x_s / (1 - s) + [(t + (1 - t) * s^2 / (1 - s)^2) / sigma_ts] * n``. Given
    ``x_t = renoise(x_s, s, t, n)``, ``E[T | x_t]`` is the flow-matching velocity at ``(x_t, t)`` of the clean
    law behind ``x_s``. At ``s = 0`` it is plain flow matching, ``T = n - x_s``.

    Shape: ``x_s, n: (B, ...)``; ``s, t``: scalars or ``(B,)``.
    """
    _, sigma_ts = renoise_coefficients(s, t)
    s, t = torch.broadcast_tensors(level(s).to(sigma_ts.device), level(t).to(sigma_ts.device))
    c_x = -1 / (1 - s)
    c_n = (t + (1 - t) * s**2 / (1 - s) ** 2) / sigma_ts
    return (expand_like(c_x, x_s) * x_s + expand_like(c_n, x_s) * n).to(x_s.dtype)
