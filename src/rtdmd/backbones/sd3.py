"""SD3 / SD3.5 through diffusers' ``StableDiffusion3Pipeline`` (spec section 6).

- Text: two CLIP encoders (penultimate hidden + pooled) and T5 (``max_sequence_length``; the recipe uses 128),
  exactly as the stock ``encode_prompt`` computes them (it is called), cached per prompt.
- ``x``: latents ``(B, C, H/f, W/f)`` as the pipeline passes them to ``scheduler.step``; the transformer takes
  ``tau = 1000 sigma``; CFG is one batched forward on ``[uncond; cond]``.
- Pixel space: a folder whose ``vae`` is null (the embedded world) has ``f = 1``, ``x`` in [-1, 1] and
  ``decode(x) = (x + 1) / 2``; ``height``/``width`` are the pixel size. (A stock pipeline assumes a factor of 8
  without a VAE: call it with 8 times the pixel size, or set ``pipe.vae_scale_factor = 1``, which the backbone
  does on its own pipeline.) A null ``text_encoder_3`` gives ``max_sequence_length`` zero vectors for T5, as the
  stock pipeline does: use the value the teacher was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from rtdmd.backbones import common
from rtdmd.backbones.base import Cond
from rtdmd.backbones.lora import LoraSpec, RoleAdapters
from rtdmd.config.strict import check
from rtdmd.errors import UserError


@dataclass(frozen=True)
class SD3Config:
    kind: Literal["sd3"] = "sd3"
    # local diffusers folder or hub id; "" = the teacher the world ships (the embedded shapes world)
    path: str = "stabilityai/stable-diffusion-3-medium-diffusers"
    teacher_guidance: float = 7.0  # CFG scale of the teacher (SD3-M 7.0, SD3.5-M 4.5)
    height: int = 1024
    width: int = 1024
    max_sequence_length: int = 128  # T5 tokens
    rank: int = 32
    alpha: float = 64.0
    target_modules: tuple[str, ...] = common.ATTENTION_TARGETS
    prompt_cache: int = 4096  # prompts whose embeddings stay cached

    def __post_init__(self):
        common.check_common(self, multiple=8)
        check(self.max_sequence_length <= 512, "max_sequence_length must be <= 512")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the folder (or the world's teacher, when ``path`` is
        empty) is an SD3 pipeline."""
        from rtdmd.backbones.loading import pipeline_folder

        shipped = getattr(getattr(config, "world", None), "teacher_folder", None)
        pipeline_folder(model_path(self.path, shipped() if shipped else None), "StableDiffusion3Pipeline")


def model_path(path: str, world_teacher) -> str:
    """``backbone.path``, or when it is empty the teacher folder the world ships (the shapes world does)."""
    if path:
        return path
    if not world_teacher:
        raise UserError("backbone.path is empty and the world ships no teacher: give a diffusers folder or hub id")
    return str(world_teacher)


class SD3Backbone(common.LoraRoleMethods):
    """Teacher, generator and fake score of one SD3 pipeline (roles as LoRA adapters on its transformer)."""

    def __init__(self, pipe, cfg: SD3Config, device: torch.device, dtype: torch.dtype):
        self.pipe, self.cfg, self.device, self.dtype = pipe, cfg, torch.device(device), dtype
        vae = pipe.vae
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        pipe.vae_scale_factor = self.scale  # the stock pipeline assumes 8 when there is no VAE
        transformer = pipe.transformer
        multiple = self.scale * transformer.config.patch_size
        if cfg.height % multiple or cfg.width % multiple:
            raise UserError(f"backbone.height and width must be multiples of {multiple} for this model, "
                            f"got {cfg.height}x{cfg.width}")
        self.sample_shape = (transformer.config.in_channels, cfg.height // self.scale, cfg.width // self.scale)
        self.roles = RoleAdapters({"teacher": transformer, "generator": transformer, "fake": transformer},
                                  LoraSpec(cfg.rank, cfg.alpha, cfg.target_modules))
        self._cache = common.PromptCache(self._encode, cfg.prompt_cache, self.device)
        self.generator_folder = pipe.rtdmd_folder

    # Conditioning
    def _encode(self, prompts: list[str]) -> Cond:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, do_classifier_free_guidance=False,
            max_sequence_length=self.cfg.max_sequence_length)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def encode(self, prompts: Sequence[str]) -> Cond:
        return self._cache(prompts)

    # Velocity
    def _velocity(self, role: str, x: Tensor, sigma: Tensor, cond: Cond, g: float) -> Tensor:
        model = self.roles.activate(role)
        h = x.to(self.dtype)
        timestep = (sigma.to(self.device).float() * 1000.0).expand(x.shape[0])
        forward = lambda h, t, c: self._forward(model, h, t, c)
        with self.precision():
            v = common.guided(forward, h, timestep, cond, self._cache, g)
        return v.to(x.dtype)

    @staticmethod
    def _forward(model: nn.Module, h: Tensor, timestep: Tensor, cond: Cond) -> Tensor:
        return model(hidden_states=h, timestep=timestep, encoder_hidden_states=cond["prompt_embeds"],
                     pooled_projections=cond["pooled_prompt_embeds"], return_dict=False)[0]

    # Noise, images, schedules
    def noise(self, generators: Sequence[torch.Generator]) -> Tensor:
        x = self.pipe.prepare_latents(len(generators), self.sample_shape[0], self.cfg.height, self.cfg.width,
                                      self.dtype, self.device, list(generators))
        return x.float()

    def decode(self, x: Tensor) -> Tensor:
        vae = self.pipe.vae
        if vae is None:
            return ((x.float() + 1) / 2).clamp(0, 1)
        latents = x / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(latents.to(self.dtype), return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def _mu(self) -> float | None:
        config = self.pipe.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return None
        patch = self.pipe.transformer.config.patch_size
        # SD3's pipeline defaults differ from FLUX's only in max_shift (1.16).
        return common.scheduler_mu({"max_shift": 1.16, **config},
                                   (self.sample_shape[1] // patch) * (self.sample_shape[2] // patch))

    def generator_sigmas(self, step_list: Sequence[int]) -> Tensor:
        return common.shifted_generator_sigmas(step_list, self.pipe.scheduler.config, self._mu())

    def teacher_sigmas(self, num_steps: int) -> Tensor:
        mu = self._mu()
        return common.scheduler_sigmas(self.pipe.scheduler, num_steps, **({} if mu is None else {"mu": mu}))

    # Export (rtdmd.export)
    def cps_scheduler_config(self) -> dict:
        """How the CPS scheduler shifts this family's generator levels (static shift or dynamic mu)."""
        return common.shift_config(self.pipe.scheduler.config)


def build(cfg: SD3Config, *, world=None, device: torch.device, dtype: torch.dtype) -> SD3Backbone:
    from diffusers import StableDiffusion3Pipeline

    from rtdmd.backbones.loading import load_pipeline

    path = model_path(cfg.path, getattr(world, "teacher_path", None))
    pipe = load_pipeline(StableDiffusion3Pipeline, path, device=device, dtype=dtype)
    return SD3Backbone(pipe, cfg, device, dtype)
