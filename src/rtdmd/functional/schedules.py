"""Noise schedules of the 4-step generator (spec section 2).

Every schedule is a float32 tensor of decreasing levels that ends in 0, like k-diffusion's ``get_sigmas_*``.
The shift formulas are those of diffusers' ``FlowMatchEulerDiscreteScheduler`` (static shift) and of
``pipeline_flux.calculate_shift`` / ``pipeline_flux2_klein.compute_empirical_mu`` (dynamic shift); the backbones
call the functions here, and the tests check them against diffusers'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

DENOISING_STEP_LIST = (1000, 750, 500, 250)


def static_shift(u: Tensor, shift: float) -> Tensor:
    """SD3 shift ``sigma = shift * u / (1 + (shift - 1) * u)``; shift 1 is the identity."""
    return shift * u / (1 + (shift - 1) * u)


def exponential_shift(u: Tensor, mu: float) -> Tensor:
    """FLUX shift ``sigma = e^mu / (e^mu + 1/u - 1)``, with ``u = 0`` mapped to 0."""
    u = u.double()
    out = torch.where(u > 0, math.exp(mu) / (math.exp(mu) + 1 / u.clamp_min(1e-30) - 1), torch.zeros_like(u))
    return out.float()


def dynamic_shift_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                     base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Dynamic shift of FLUX.1 (and SD3 schedulers with ``use_dynamic_shifting``): ``mu`` linear in the token
    count, from ``base_shift`` at ``base_seq_len`` to ``max_shift`` at ``max_seq_len`` (FLUX.1 at 512 px: 1024
    tokens, mu = 0.63). The scheduler config supplies the four constants."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (image_seq_len - base_seq_len)


def flux2_empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """FLUX.2-klein "empirical mu": a line in the step count between fits at 10 and 200 steps."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    mu_200 = a2 * image_seq_len + b2
    if image_seq_len > 4300:
        return float(mu_200)
    mu_10 = a1 * image_seq_len + b1
    slope = (mu_200 - mu_10) / 190.0
    return float(slope * num_steps + mu_200 - 200.0 * slope)


def generator_sigmas(step_list: Sequence[int] = DENOISING_STEP_LIST, *, shift: float | None = None,
                     mu: float | None = None) -> Tensor:
    """Levels of the few-step generator: ``u = step / 1000`` through one shift, then 0 appended.

    Exactly one of ``shift`` (static, SD3: 3.0) or ``mu`` (exponential, FLUX) may be given; neither means
    no shift. SD3: ``[1, 0.9, 0.75, 0.5, 0]``; FLUX.1 at 512 px (mu = 0.63): ``[1, 0.849, 0.652, 0.385, 0]``.
    """
    if shift is not None and mu is not None:
        raise ValueError("give either a static shift or a dynamic mu, not both")
    u = torch.tensor([float(s) / 1000.0 for s in step_list], dtype=torch.float64)
    if shift is not None:
        sigmas = static_shift(u, shift)
    elif mu is not None:
        sigmas = exponential_shift(u, mu).double()
    else:
        sigmas = u
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def uniform_sigmas(num_steps: int, *, shift: float | None = None, mu: float | None = None) -> Tensor:
    """``num_steps`` teacher levels, ``u`` evenly spaced from 1 to ``1/num_steps`` (the grid the FLUX pipelines
    pass to their scheduler), through the same shift as :func:`generator_sigmas`, ending in 0. Diffusers
    backbones take their teacher grid from their own scheduler instead (SD3's differs)."""
    steps = torch.linspace(1000.0, 1000.0 / num_steps, num_steps, dtype=torch.float64)
    return generator_sigmas(steps.tolist(), shift=shift, mu=mu)

