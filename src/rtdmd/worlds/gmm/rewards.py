"""The analytic world's rewards: linear, quadratic and a half-space indicator on vectors.

Each reward can say how it tilts a Gaussian mixture: ``tilt(mixture, beta)`` returns ``p0 exp(r / beta)`` as a
mixture when a closed form exists, else None (the world then importance-resamples teacher samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.errors import ConfigError
from rtdmd.worlds.gmm.mixture import Mixture


@runtime_checkable
class ClosedFormTilt(Protocol):
    def tilt(self, mixture: Mixture, beta: float) -> Mixture | None:
        """``mixture * exp(r / beta)`` as a mixture, or None when it has no closed form."""


@dataclass(frozen=True)
class LinearConfig:
    kind: Literal["linear"] = "linear"
    w: tuple[float, ...] = (0.0, 1.0)


@dataclass(frozen=True)
class QuadraticConfig:
    """``r(x) = -scale * ||x - center||^2 / 2`` (isotropic precision ``scale``)."""

    kind: Literal["quadratic"] = "quadratic"
    center: tuple[float, ...] = (0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self):
        check(self.scale > 0, f"scale must be positive, got {self.scale}")


@dataclass(frozen=True)
class RegionConfig:
    """``r(x) = 1`` where ``normal . x >= offset``, else 0 (a half-space; not differentiable)."""

    kind: Literal["region"] = "region"
    normal: tuple[float, ...] = (0.0, 1.0)
    offset: float = 0.0


class Linear:
    differentiable = True

    def __init__(self, w: Sequence[float], device: torch.device | str | None = None):
        self.w = torch.tensor(w, dtype=torch.float32, device=device)

    def __call__(self, x: Tensor, prompts: Sequence[str] = (), metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        return x.float() @ self.w

    def tilt(self, mixture: Mixture, beta: float) -> Mixture:
        return mixture.tilt_linear(self.w.double().cpu(), beta)


class Quadratic:
    differentiable = True

    def __init__(self, center: Sequence[float], scale: float, device: torch.device | str | None = None):
        self.center = torch.tensor(center, dtype=torch.float32, device=device)
        self.scale = scale

    def __call__(self, x: Tensor, prompts: Sequence[str] = (), metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        return -0.5 * self.scale * ((x.float() - self.center) ** 2).sum(-1)

    def tilt(self, mixture: Mixture, beta: float) -> Mixture:
        precision = self.scale * torch.eye(mixture.dim, dtype=torch.float64)
        return mixture.tilt_quadratic(self.center.double().cpu(), precision, beta)


class Region:
    differentiable = False

    def __init__(self, normal: Sequence[float], offset: float, device: torch.device | str | None = None):
        self.normal = torch.tensor(normal, dtype=torch.float32, device=device)
        self.offset = offset

    def __call__(self, x: Tensor, prompts: Sequence[str] = (), metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        return (x.float() @ self.normal >= self.offset).float()

    def tilt(self, mixture: Mixture, beta: float) -> None:
        return None


def _check_dim(name: str, values: Sequence[float], world) -> None:
    dim = getattr(world, "dim", None)  # a world that is not a vector world is refused by the backbone
    if dim is not None and len(values) != dim:
        raise ConfigError(f"reward {name} has {len(values)} entries but the world has dimension {dim}")


def build_linear(cfg: LinearConfig, *, world=None, device=None) -> Linear:
    _check_dim("w", cfg.w, world)
    return Linear(cfg.w, device)


def build_quadratic(cfg: QuadraticConfig, *, world=None, device=None) -> Quadratic:
    _check_dim("center", cfg.center, world)
    return Quadratic(cfg.center, cfg.scale, device)


def build_region(cfg: RegionConfig, *, world=None, device=None) -> Region:
    _check_dim("normal", cfg.normal, world)
    return Region(cfg.normal, cfg.offset, device)
