"""The analytic world's flow models: the exact mixture velocity as teacher, two small MLPs as generator and
fake score. Both MLPs start as regressions onto the teacher's velocity (``init_students``), as real
generators and fake scores start from the teacher's weights."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rtdmd.backbones.base import Cond, Velocity
from rtdmd.config.strict import check
from rtdmd.errors import ConfigError
from rtdmd.functional.flow import interpolate
from rtdmd.functional.schedules import generator_sigmas, uniform_sigmas
from rtdmd.rng import Streams
from rtdmd.worlds.base import AnalyticWorld, World


@dataclass(frozen=True)
class MLPBackboneConfig:
    kind: Literal["mlp"] = "mlp"
    hidden: int = 256
    depth: int = 3
    prompt_dim: int = 16
    fourier: int = 8  # frequencies of the sigma embedding
    fit_steps: int = 2000  # regression steps onto the teacher's velocity (init_students)
    fit_batch: int = 512
    fit_points: int = 200_000  # size of the regression set
    fit_lr: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        check(self.hidden >= 1 and self.depth >= 1 and self.prompt_dim >= 1, "hidden, depth, prompt_dim >= 1")
        check(self.fit_steps >= 0 and self.fit_batch >= 1 and self.fit_lr > 0 and self.fit_points >= 1,
              "fit_steps >= 0, fit_batch >= 1, fit_points >= 1, fit_lr > 0")


class VelocityMLP(nn.Module):
    """``v(x, sigma, prompt)``: an MLP on ``[x, fourier(sigma), embedding(prompt)]``."""

    def __init__(self, dim: int, num_prompts: int, hidden: int, depth: int, prompt_dim: int, fourier: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, fourier + 1, dtype=torch.float32))
        self.prompt = nn.Embedding(num_prompts, prompt_dim)
        layers, width = [], dim + 2 * fourier + 1 + prompt_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, sigma: Tensor, prompt_ids: Tensor) -> Tensor:
        angles = sigma.float()[:, None] * self.freqs
        features = torch.cat([x.float(), angles.sin(), angles.cos(), sigma.float()[:, None], self.prompt(prompt_ids)], 1)
        return self.net(features).to(x.dtype)


class MLPBackbone:
    """Teacher = the world's exact velocity; generator, fake = :class:`VelocityMLP` (fp32, fully trained)."""

    def __init__(self, cfg: MLPBackboneConfig, world: AnalyticWorld, device: torch.device):
        self.cfg, self.world, self.device = cfg, world, torch.device(device)
        self.sample_shape = (world.dim,)
        torch.manual_seed(cfg.seed)  # weight init only; training draws from counter-based streams
        make = lambda: VelocityMLP(world.dim, len(world.prompt_names), cfg.hidden, cfg.depth, cfg.prompt_dim,
                                   cfg.fourier).to(self.device)
        self.nets = {"generator": make(), "fake": make()}

    def encode(self, prompts: Sequence[str]) -> Cond:
        return {"prompt_ids": self.world.prompt_index(prompts).to(self.device)}

    def role(self, name: str, guidance: float | None = None) -> Velocity:
        if name == "teacher":
            return lambda x, sigma, cond: self.world.teacher_velocity(x, sigma, cond["prompt_ids"], guidance)
        net = self.nets[name]
        return lambda x, sigma, cond: net(x, sigma, cond["prompt_ids"])

    def noise(self, generators: Sequence[torch.Generator]) -> Tensor:
        return torch.stack([torch.randn(self.sample_shape, generator=g) for g in generators]).to(self.device)

    def decode(self, x: Tensor) -> Tensor:
        return x

    def generator_sigmas(self, step_list: Sequence[int]) -> Tensor:
        return generator_sigmas(step_list)

    def teacher_sigmas(self, num_steps: int) -> Tensor:
        return uniform_sigmas(num_steps)

    def trainable(self, role: str) -> dict[str, nn.Parameter]:
        return dict(self.nets[role].named_parameters())

    def init_students(self) -> dict[str, float]:
        """Regress the generator onto the teacher's velocity at points of the diffused data, then copy it
        into the fake score. The regression set (``fit_points`` points, teacher velocity evaluated once) and
        the minibatches are deterministic given ``cfg.seed``."""
        net, cfg = self.nets["generator"], self.cfg
        streams, n_prompts = Streams(cfg.seed), len(self.world.prompt_names)
        gen = streams.generator("fit_data")
        counts = torch.bincount(torch.randint(n_prompts, (cfg.fit_points,), generator=gen), minlength=n_prompts)
        ids = torch.repeat_interleave(torch.arange(n_prompts), counts)
        x0 = torch.cat([self.world.sample_data(p, int(c), gen) for p, c in enumerate(counts)]).float()
        sigma = torch.rand(cfg.fit_points, generator=gen)
        x = interpolate(x0, torch.randn(x0.shape, generator=gen), sigma)
        x, sigma, ids = x.to(self.device), sigma.to(self.device), ids.to(self.device)
        target = torch.cat([self.world.teacher_velocity(x[i:i + 8192], sigma[i:i + 8192], ids[i:i + 8192])
                            for i in range(0, cfg.fit_points, 8192)])
        optim = torch.optim.Adam(net.parameters(), lr=cfg.fit_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, max(cfg.fit_steps, 1))
        loss = torch.zeros(())
        for step in tqdm(range(cfg.fit_steps), desc="fit students to teacher", disable=None, leave=False):
            rows = torch.randint(cfg.fit_points, (cfg.fit_batch,), generator=streams.generator("fit", step)).to(self.device)
            loss = ((net(x[rows], sigma[rows], ids[rows]) - target[rows]) ** 2).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
        optim.zero_grad(set_to_none=True)  # the fit's gradients must not leak into the first training step
        self.nets["fake"].load_state_dict(copy.deepcopy(net.state_dict()))
        return {"fit_loss": loss.item()}

    def fsdp_units(self) -> list[nn.Module]:
        """Modules to shard with FSDP2, in order: each MLP's linear layers, then the MLP (which keeps the prompt
        embedding). The teacher is analytic and holds no parameters."""
        nets = list(self.nets.values())
        return [layer for net in nets for layer in net.net if isinstance(layer, nn.Linear)] + nets

    def start_stage2(self) -> None:
        """Full fine-tuning of the MLPs: the stage-1 weights are the starting point, nothing to fold."""


def build(cfg: MLPBackboneConfig, *, world: World, device, dtype=torch.float32) -> MLPBackbone:
    if not isinstance(world, AnalyticWorld):
        raise ConfigError("backbone kind 'mlp' needs an analytic world (world.kind: gmm)")
    return MLPBackbone(cfg, world, device)
