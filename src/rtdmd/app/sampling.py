"""Sampling with a backbone's roles: the few-step CPS generator and the teacher's ODE (pure rollouts; the
callers decide about saving)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rtdmd.backbones.base import Backbone, Cond
from rtdmd.functional.samplers import rollout


@torch.no_grad()
def sample(backbone: Backbone, role: str, cond: Cond, sigmas: Tensor, eta: float,
           generators: Sequence[torch.Generator], guidance: float | None = None) -> Tensor:
    """Roll ``role`` down ``sigmas`` from fresh noise; sample ``j`` draws all its randomness from
    ``generators[j]`` (initial noise first, then one draw per stochastic step), as a diffusers pipeline with a
    list of generators and the CPS scheduler does. Returns the final ``x`` (not decoded)."""
    x = backbone.noise(generators)

    def step_noise(_: int) -> Tensor:
        rows = [torch.randn(x.shape[1:], generator=g) for g in generators]
        return torch.stack(rows).to(device=x.device, dtype=x.dtype)

    return rollout(backbone.role(role, guidance), x, sigmas.to(x.device), eta, step_noise, cond)


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def sample_seeds(seed: int, num_prompts: int, num_per_prompt: int) -> list[list[int]]:
    """Seed of sample ``j`` of prompt ``p``: ``seed + p * num_per_prompt + j`` (recorded with every sample)."""
    return [[seed + p * num_per_prompt + j for j in range(num_per_prompt)] for p in range(num_prompts)]


@torch.no_grad()
def sample_images(backbone: Backbone, prompts: Sequence[str], seeds: Sequence[int], *, sigmas: Tensor, eta: float,
                  role: str = "generator", guidance: float | None = None, batch_size: int = 256,
                  decode: bool = True) -> Tensor:
    """One sample per ``(prompts[i], seeds[i])`` pair, in batches; decoded unless ``decode=False``."""
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        cond = backbone.encode(list(prompts[chunk]))
        x = sample(backbone, role, cond, sigmas, eta, seeded_generators(seeds[chunk]), guidance)
        outputs.append(backbone.decode(x) if decode else x)
    return torch.cat(outputs)


def generate(backbone: Backbone, prompts: Sequence[str], num_per_prompt: int, seed: int, *, sigmas: Tensor,
             eta: float, role: str = "generator", guidance: float | None = None, batch_size: int = 256,
             decode: bool = True) -> tuple[Tensor, list[int]]:
    """``num_per_prompt`` samples of every prompt (prompt-major order) and the seed of each sample."""
    seeds = [s for row in sample_seeds(seed, len(prompts), num_per_prompt) for s in row]
    texts = [p for p in prompts for _ in range(num_per_prompt)]
    x = sample_images(backbone, texts, seeds, sigmas=sigmas, eta=eta, role=role, guidance=guidance,
                      batch_size=batch_size, decode=decode)
    return x, seeds
