"""The analytic world: a Gaussian mixture per prompt, whose teacher, tilted target p~ and metrics are known
in closed form (spec section 10). Defined entirely by YAML:

    world:
      kind: gmm
      components:            # weight, mean, covariance (a matrix, or one number for an isotropic one)
        - {weight: 0.5, mean: [-2.0, 0.0], cov: [[0.3, 0.0], [0.0, 0.3]]}
        - {weight: 0.5, mean: [2.0, 0.0], cov: 0.3}
      prompts: {left: [0], right: [1], any: [0, 1]}   # components each prompt draws from
      guidance: 1.0          # teacher CFG; the unconditional model is the full mixture
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.data.prompts import PromptSet
from rtdmd.errors import UserError
from rtdmd.functional.samplers import rollout
from rtdmd.functional.schedules import uniform_sigmas
from rtdmd.rewards.base import RewardSet
from rtdmd.worlds.gmm.mixture import Mixture, energy_distance
from rtdmd.worlds.gmm.rewards import ClosedFormTilt


@dataclass(frozen=True)
class Component:
    weight: float
    mean: tuple[float, ...]
    cov: float | tuple[tuple[float, ...], ...] = 1.0

    def matrix(self) -> Tensor:
        d = len(self.mean)
        if isinstance(self.cov, float):
            return self.cov * torch.eye(d, dtype=torch.float64)
        return torch.tensor(self.cov, dtype=torch.float64)


@dataclass(frozen=True)
class GMMWorldConfig:
    kind: Literal["gmm"] = "gmm"
    components: tuple[Component, ...] = ()
    prompts: dict[str, list[int]] = field(default_factory=dict)
    guidance: float = 1.0
    teacher_steps: int = 500  # Euler steps of the exact teacher ODE (used when guidance != 1)
    resample_factor: int = 20  # teacher samples per target sample for importance resampling of p~

    def __post_init__(self):
        check(len(self.components) >= 1, "components: give at least one {weight, mean, cov}")
        dims = {len(c.mean) for c in self.components}
        check(len(dims) == 1, f"components: all means need the same dimension, got {sorted(dims)}")
        dim = dims.pop()
        for i, c in enumerate(self.components):
            check(c.weight > 0, f"components[{i}].weight must be positive, got {c.weight}")
            cov = c.matrix()
            check(cov.shape == (dim, dim), f"components[{i}].cov must be {dim}x{dim} (or one number)")
            check(bool(torch.allclose(cov, cov.T)), f"components[{i}].cov must be symmetric")
            check(bool(torch.linalg.eigvalsh(cov).min() > 0), f"components[{i}].cov must be positive definite")
        check(len(self.prompts) >= 1, "prompts: give at least one prompt -> [component indices]")
        for name, comps in self.prompts.items():
            check(len(comps) >= 1 and all(0 <= k < len(self.components) for k in comps),
                  f"prompts.{name}: component indices must lie in [0, {len(self.components) - 1}]")
        check(self.guidance >= 0, "guidance must be >= 0")
        check(self.teacher_steps >= 2 and self.resample_factor >= 1, "teacher_steps >= 2, resample_factor >= 1")


class GMMWorld:
    """Prompts, exact teacher velocity (with CFG), exact targets and metrics of a Gaussian-mixture world (an
    :class:`~rtdmd.worlds.base.AnalyticWorld`)."""

    teacher_path = None  # the teacher is the exact velocity below

    def __init__(self, cfg: GMMWorldConfig):
        self.cfg = cfg
        self.mixture = Mixture.create([c.weight for c in cfg.components], [c.mean for c in cfg.components],
                                      torch.stack([c.matrix() for c in cfg.components]))
        self.prompt_names = list(cfg.prompts)
        self.prompt_mixtures = [self.mixture.subset(cfg.prompts[name]) for name in self.prompt_names]
        self.guidance = cfg.guidance

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def prompts(self, split: str = "train") -> PromptSet:
        return PromptSet(tuple(self.prompt_names))

    def prompt_index(self, prompts: Sequence[str]) -> Tensor:
        try:
            return torch.tensor([self.prompt_names.index(p) for p in prompts], dtype=torch.long)
        except ValueError:
            unknown = next(p for p in prompts if p not in self.prompt_names)
            raise UserError(f"unknown prompt {unknown!r}: this world's prompts are {self.prompt_names}") from None

    # -- teacher -------------------------------------------------------------------------------------------
    def teacher_velocity(self, x: Tensor, sigma: Tensor, prompt_ids: Tensor, guidance: float | None = None) -> Tensor:
        """Exact guided velocity ``v_0 + g (v_c - v_0)``; ``v_0`` is the full mixture's (the unconditional model)."""
        g = self.guidance if guidance is None else guidance
        v = torch.empty_like(x)
        for pid in prompt_ids.unique().tolist():
            rows = (prompt_ids == pid).nonzero().squeeze(1).to(x.device)
            v[rows] = self.prompt_mixtures[pid].velocity(x[rows].cpu(), sigma[rows].cpu()).to(x)
        if g != 1:
            v_uncond = self.mixture.velocity(x.cpu(), sigma.cpu()).to(x)
            v = v_uncond + g * (v - v_uncond)
        return v

    def sample_data(self, prompt: int, n: int, generator: torch.Generator) -> Tensor:
        """Exact samples of the prompt's (unguided) mixture."""
        return self.prompt_mixtures[prompt].sample(n, generator)[0]

    def sample_teacher(self, prompt: int, n: int, generator: torch.Generator) -> Tensor:
        """Exact teacher samples: the prompt's mixture at guidance 1, else its ODE with the exact velocity."""
        if self.guidance == 1:
            return self.sample_data(prompt, n, generator)
        x = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        ids = torch.full((n,), prompt, dtype=torch.long)
        return rollout(lambda x, s, _: self.teacher_velocity(x, s, ids), x,
                       uniform_sigmas(self.cfg.teacher_steps).double(), 0.0)

    # -- the tilted target p~ ~ p_T exp(r / beta) ----------------------------------------------------------
    def tilted_mixture(self, prompt: int, rewards: RewardSet, beta: float) -> Mixture | None:
        """Closed form of p~ for one prompt, when it exists (guidance 1 and a single reward with a tilt)."""
        if self.guidance != 1 or len(rewards.entries) != 1:
            return None
        entry = rewards.entries[0]
        if not isinstance(entry.reward, ClosedFormTilt):
            return None
        return entry.reward.tilt(self.prompt_mixtures[prompt], beta / entry.weight)

    def sample_tilted(self, prompt: int, n: int, rewards, beta: float, generator: torch.Generator) -> Tensor:
        mixture = self.tilted_mixture(prompt, rewards, beta)
        if mixture is not None:
            return mixture.sample(n, generator)[0]
        pool = self.sample_teacher(prompt, n * self.cfg.resample_factor, generator)
        total = rewards.total(rewards.score(pool.float(), [self.prompt_names[prompt]] * len(pool))).double()
        if not bool(torch.isfinite(total).all()):
            raise UserError(f"the rewards are NaN or infinite on teacher samples of prompt "
                            f"{self.prompt_names[prompt]!r}, so the tilted target cannot be sampled: check the rewards")
        weights = torch.softmax(total / beta, 0)
        return pool[torch.multinomial(weights, n, replacement=True, generator=generator)]

    # -- metrics -------------------------------------------------------------------------------------------
    def component_fractions(self, x: Tensor, reference: Mixture) -> Tensor:
        """Fraction of samples assigned (max responsibility) to each component of ``reference``."""
        labels = reference.responsibilities(x.double()).argmax(1)
        return torch.bincount(labels, minlength=len(reference.weights)).double() / len(x)

    def evaluate(self, samples: Mapping[str, Tensor], rewards, beta: float, seed: int = 0) -> dict:
        """Metrics of generated samples per prompt against the teacher and against p~ (same sample sizes):
        energy distances and their noise floors, mean reward against E_p~[r] and E_T[r], component weights."""
        per_prompt = {}
        for name, x in samples.items():
            p = self.prompt_names.index(name)
            n = len(x)
            gen = torch.Generator().manual_seed(seed * 1000 + p)
            teacher, teacher2 = self.sample_teacher(p, n, gen), self.sample_teacher(p, n, gen)
            tilted, tilted2 = (self.sample_tilted(p, n, rewards, beta, gen) for _ in range(2))
            tilted_mix = self.tilted_mixture(p, rewards, beta)
            ref_tilted = tilted_mix if tilted_mix is not None else self.prompt_mixtures[p]
            score = lambda y: float(rewards.total(rewards.score(y.float(), [name] * len(y))).mean())
            w_gen_t = self.component_fractions(x, self.prompt_mixtures[p])
            w_teacher = self.component_fractions(teacher, self.prompt_mixtures[p])
            w_gen_p = self.component_fractions(x, ref_tilted)
            w_tilted = self.component_fractions(tilted, ref_tilted)
            per_prompt[name] = {
                "ed_teacher": energy_distance(x, teacher), "ed_teacher_floor": energy_distance(teacher2, teacher),
                "ed_tilted": energy_distance(x, tilted), "ed_tilted_floor": energy_distance(tilted2, tilted),
                "ed_teacher_to_tilted": energy_distance(teacher2, tilted),
                "reward": score(x), "reward_teacher": score(teacher), "reward_tilted": score(tilted),
                "weights": w_gen_t.tolist(), "weights_teacher": w_teacher.tolist(),
                "weights_vs_tilted": w_gen_p.tolist(), "weights_tilted": w_tilted.tolist(),
                "weight_error_teacher": float((w_gen_t - w_teacher).abs().max()),
                "weight_error_tilted": float((w_gen_p - w_tilted).abs().max()),
                "std": x.double().std(0).mean().item(), "std_teacher": teacher.std(0).mean().item(),
                "std_tilted": tilted.std(0).mean().item(),
            }
            if tilted_mix is not None:
                per_prompt[name]["weights_tilted_exact"] = tilted_mix.weights.tolist()
        keys = [k for k, v in next(iter(per_prompt.values())).items() if isinstance(v, float)]
        summary = {k: sum(m[k] for m in per_prompt.values()) / len(per_prompt) for k in keys}
        return {"summary": summary, "prompts": per_prompt}


def build(cfg: GMMWorldConfig) -> GMMWorld:
    return GMMWorld(cfg)
