"""FLUX.1 through diffusers' ``FluxPipeline`` (spec section 6).

- Text: CLIP pooled + T5 (``max_sequence_length``, 512 by default), from the stock ``encode_prompt``, cached.
- ``x``: packed latents ``(B, L, 4 C)`` (2x2 patches of the VAE latents, ``L = (H/2f)(W/2f)``) with 2-D image ids,
  the layout the pipeline passes to ``scheduler.step``; the transformer takes ``sigma``.
- Guidance: a guidance-distilled model (``guidance_embeds`` in the transformer config, e.g. FLUX.1-dev) takes
  the teacher's scale as its guidance input in one forward, and 1.0 for generator and fake score; otherwise the
  teacher uses true CFG, batched ``[uncond; cond]`` in one forward.
- Schedules: dynamic shift ``mu`` linear in ``L`` (512 px: mu = 0.63, spec section 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from rtdmd.backbones import common
from rtdmd.backbones.base import Cond
from rtdmd.backbones.lora import LoraSpec, RoleAdapters
from rtdmd.errors import UserError


@dataclass(frozen=True)
class Flux1Config:
    kind: Literal["flux1"] = "flux1"
    path: str = "black-forest-labs/FLUX.1-dev"  # local diffusers folder or hub id
    teacher_guidance: float = 3.5  # guidance input (guidance-distilled) or true-CFG scale
    guidance_mode: Literal["auto", "embedded", "cfg"] = "auto"  # auto: embedded iff the model has guidance_embeds
    height: int = 512
    width: int = 512
    max_sequence_length: int = 512  # T5 tokens
    rank: int = 32
    alpha: float = 64.0
    target_modules: tuple[str, ...] = common.ATTENTION_TARGETS
    prompt_cache: int = 4096

    def __post_init__(self):
        common.check_common(self, multiple=16)

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): a FLUX.1 folder whose guidance fits guidance_mode."""
        from rtdmd.backbones.loading import pipeline_folder, read_config

        folder = pipeline_folder(self.path, "FluxPipeline")
        check_guidance_mode(self, bool(read_config(folder, "transformer/config.json").get("guidance_embeds")))


def check_guidance_mode(cfg: Flux1Config, has_embedding: bool) -> None:
    """A guidance-distilled model (``guidance_embeds``) takes the teacher's scale as an input, others use CFG."""
    if cfg.guidance_mode == "embedded" and not has_embedding:
        raise UserError("backbone.guidance_mode 'embedded' needs a guidance-distilled FLUX.1 (guidance_embeds: "
                        "true in transformer/config.json); this model has none: use guidance_mode auto or cfg")
    if cfg.guidance_mode == "cfg" and has_embedding:
        raise UserError("backbone.guidance_mode 'cfg' with a guidance-distilled FLUX.1 (guidance_embeds: true): "
                        "its teacher_guidance is the guidance input; use guidance_mode auto or embedded")


class Flux1Backbone(common.LoraRoleMethods):
    """Teacher, generator and fake score of one FLUX.1 pipeline (roles as LoRA adapters on its transformer)."""

    def __init__(self, pipe, cfg: Flux1Config, device: torch.device, dtype: torch.dtype):
        self.pipe, self.cfg, self.device, self.dtype = pipe, cfg, torch.device(device), dtype
        transformer = pipe.transformer
        has_embedding = bool(transformer.config.guidance_embeds)
        check_guidance_mode(cfg, has_embedding)
        self.embedded_guidance = has_embedding
        self.scale = pipe.vae_scale_factor
        multiple = 2 * self.scale
        if cfg.height % multiple or cfg.width % multiple:
            raise UserError(f"backbone.height and width must be multiples of {multiple}, got {cfg.height}x{cfg.width}")
        self.latent_hw = (cfg.height // self.scale, cfg.width // self.scale)
        self.sample_shape = ((self.latent_hw[0] // 2) * (self.latent_hw[1] // 2), transformer.config.in_channels)
        self.image_ids = pipe._prepare_latent_image_ids(1, self.latent_hw[0] // 2, self.latent_hw[1] // 2,
                                                        self.device, dtype)
        self.roles = RoleAdapters({"teacher": transformer, "generator": transformer, "fake": transformer},
                                  LoraSpec(cfg.rank, cfg.alpha, cfg.target_modules))
        self._cache = common.PromptCache(self._encode, cfg.prompt_cache, self.device)
        self.generator_folder = pipe.rtdmd_folder

    def _encode(self, prompts: list[str]) -> Cond:
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                    max_sequence_length=self.cfg.max_sequence_length)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def encode(self, prompts: Sequence[str]) -> Cond:
        return self._cache(prompts)

    def _velocity(self, role: str, x: Tensor, sigma: Tensor, cond: Cond, g: float) -> Tensor:
        model = self.roles.activate(role)
        batch = x.shape[0]
        # As the pipeline: timestep = 1000 sigma in the latents' dtype, divided by 1000.
        timestep = (sigma.to(self.device).float() * 1000.0).expand(batch).to(self.dtype) / 1000
        h = x.to(self.dtype)
        with self.precision():
            if self.embedded_guidance:  # a guidance-distilled model takes the scale as an input: one forward
                v = self._forward(model, h, timestep, cond, torch.full((batch,), g, device=self.device))
            else:
                v = common.guided(lambda h, t, c: self._forward(model, h, t, c, None), h, timestep, cond, self._cache, g)
        return v.to(x.dtype)

    def _forward(self, model: nn.Module, h: Tensor, timestep: Tensor, cond: Cond, guidance: Tensor | None) -> Tensor:
        text_ids = torch.zeros(cond["prompt_embeds"].shape[1], 3, device=self.device, dtype=self.dtype)
        return model(hidden_states=h, timestep=timestep, guidance=guidance,
                     pooled_projections=cond["pooled_prompt_embeds"], encoder_hidden_states=cond["prompt_embeds"],
                     txt_ids=text_ids, img_ids=self.image_ids, return_dict=False)[0]

    def noise(self, generators: Sequence[torch.Generator]) -> Tensor:
        x, _ = self.pipe.prepare_latents(len(generators), self.pipe.transformer.config.in_channels // 4,
                                         self.cfg.height, self.cfg.width, self.dtype, self.device, list(generators))
        return x.float()

    def vae_latents(self, x: Tensor) -> Tensor:
        """Unpacked VAE latents ``(B, C, H/f, W/f)`` of ``x``."""
        return self.pipe._unpack_latents(x, self.cfg.height, self.cfg.width, self.scale)

    def decode(self, x: Tensor) -> Tensor:
        vae = self.pipe.vae
        latents = self.vae_latents(x) / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(latents.to(self.dtype), return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def _mu(self) -> float:
        return common.scheduler_mu(self.pipe.scheduler.config, self.sample_shape[0])

    def generator_sigmas(self, step_list: Sequence[int]) -> Tensor:
        return common.shifted_generator_sigmas(step_list, self.pipe.scheduler.config, self._mu())

    def teacher_sigmas(self, num_steps: int) -> Tensor:
        # As FluxPipeline: sigmas linspace(1, 1/N, N) through the scheduler's dynamic shift.
        sigmas = None if self.pipe.scheduler.config.get("use_flow_sigmas", False) else \
            np.linspace(1.0, 1 / num_steps, num_steps)
        return common.scheduler_sigmas(self.pipe.scheduler, num_steps, sigmas=sigmas, mu=self._mu())

    def cps_scheduler_config(self) -> dict:
        return common.shift_config(self.pipe.scheduler.config)


def build(cfg: Flux1Config, *, world=None, device: torch.device, dtype: torch.dtype) -> Flux1Backbone:
    from diffusers import FluxPipeline

    from rtdmd.backbones.loading import load_pipeline

    return Flux1Backbone(load_pipeline(FluxPipeline, cfg.path, device=device, dtype=dtype), cfg, device, dtype)
