"""FLUX.2-klein through diffusers' ``Flux2KleinPipeline`` (spec section 6).

- Text: the Qwen3 causal LM on the chat-templated prompt, hidden states of ``hidden_layers`` stacked (the real
  models use (9, 18, 27)), from the stock ``encode_prompt``, cached.
- ``x``: patchified latents as tokens ``(B, L, 4 C)`` with 4-D position ids, normalised by the VAE's batch-norm
  statistics: the layout the pipeline passes to ``scheduler.step``. The transformer takes ``sigma``.
- Teacher CFG: the pipeline runs two forwards; here one batched forward on ``[uncond; cond]`` (same text length,
  shared ids), the same function.
- Schedules: the klein pipeline's empirical mu (a function of ``L`` and of the step count).
- The generator may have its own base (``generator_path``, e.g. the step-distilled klein) while teacher and fake
  score use ``path`` (klein-base); text encoder, VAE and scheduler come from ``path``.
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
from rtdmd.config.strict import check
from rtdmd.errors import UserError
from rtdmd.functional import schedules

# Spec 4.7: the attention projections, plus the fused projections of the single-stream blocks.
KLEIN_TARGETS = common.ATTENTION_TARGETS + ("to_qkv_mlp_proj", "to_out")


@dataclass(frozen=True)
class Flux2KleinConfig:
    kind: Literal["flux2_klein"] = "flux2_klein"
    path: str = "black-forest-labs/FLUX.2-klein-base-4B"  # teacher and fake score (local folder or hub id)
    generator_path: str | None = None  # the generator's own base (e.g. FLUX.2-klein-4B); None: same as path
    teacher_guidance: float = 4.0  # CFG scale of the teacher
    height: int = 512
    width: int = 512
    max_sequence_length: int = 512
    hidden_layers: tuple[int, ...] = (9, 18, 27)  # Qwen3 hidden states stacked as the prompt embedding
    rank: int = 32
    alpha: float = 64.0
    target_modules: tuple[str, ...] = KLEIN_TARGETS
    prompt_cache: int = 4096

    def __post_init__(self):
        common.check_common(self, multiple=16)
        check(len(self.hidden_layers) >= 1 and all(k >= 0 for k in self.hidden_layers),
              f"hidden_layers must be non-negative layer indices, got {list(self.hidden_layers)}")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): klein folders, and no CFG on a step-distilled teacher."""
        from rtdmd.backbones.loading import pipeline_folder, read_config, resolve_folder

        folder = pipeline_folder(self.path, "Flux2KleinPipeline")
        check_teacher(self, bool(read_config(folder, "model_index.json").get("is_distilled")))
        if self.generator_path is not None:
            resolve_folder(self.generator_path)


def check_teacher(cfg: Flux2KleinConfig, is_distilled: bool) -> None:
    if is_distilled and cfg.teacher_guidance != 1.0:
        raise UserError(f"backbone.path {cfg.path} is a step-distilled klein (is_distilled: true), whose teacher "
                        "cannot use CFG: point path at klein-base and generator_path at the distilled model")


class Flux2KleinBackbone(common.LoraRoleMethods):
    """Teacher and fake score on klein-base, generator on its own base or the same one (LoRA adapters)."""

    ENCODER_SETTINGS = ("max_sequence_length", "hidden_layers")

    def __init__(self, pipe, generator_transformer: nn.Module | None, cfg: Flux2KleinConfig,
                 device: torch.device, dtype: torch.dtype, generator_folder=None):
        self.pipe, self.cfg, self.device, self.dtype = pipe, cfg, torch.device(device), dtype
        check_teacher(cfg, bool(pipe.config.is_distilled))
        layers = pipe.text_encoder.config.num_hidden_layers
        if max(cfg.hidden_layers) > layers:
            raise UserError(f"backbone.hidden_layers {list(cfg.hidden_layers)} exceed the text encoder's {layers} "
                            "layers: use indices in [0, layers] (the real klein models use [9, 18, 27])")
        base = pipe.transformer
        generator = generator_transformer if generator_transformer is not None else base
        for key in ("in_channels", "joint_attention_dim", "patch_size"):
            if generator.config[key] != base.config[key]:
                raise UserError(f"backbone.generator_path has {key} {generator.config[key]} but path has "
                                f"{base.config[key]}: both must be klein models of the same size")
        self.scale = pipe.vae_scale_factor
        multiple = 2 * self.scale
        if cfg.height % multiple or cfg.width % multiple:
            raise UserError(f"backbone.height and width must be multiples of {multiple}, got {cfg.height}x{cfg.width}")
        self.grid = (cfg.height // multiple, cfg.width // multiple)  # token rows and columns
        self.sample_shape = (self.grid[0] * self.grid[1], base.config.in_channels)
        grid = torch.zeros(1, 1, *self.grid)
        self.image_ids = pipe._prepare_latent_ids(grid).to(self.device)  # (1, L, 4)
        self.roles = RoleAdapters({"teacher": base, "generator": generator, "fake": base},
                                  LoraSpec(cfg.rank, cfg.alpha, cfg.target_modules))
        self._cache = common.PromptCache(self._encode, cfg.prompt_cache, self.device)
        self.generator_folder = generator_folder or pipe.rtdmd_folder

    def _encode(self, prompts: list[str]) -> Cond:
        embeds, _ = self.pipe.encode_prompt(prompt=prompts, device=self.device,
                                            max_sequence_length=self.cfg.max_sequence_length,
                                            text_encoder_out_layers=tuple(self.cfg.hidden_layers))
        return {"prompt_embeds": embeds}

    def encode(self, prompts: Sequence[str]) -> Cond:
        return self._cache(prompts)

    def _velocity(self, role: str, x: Tensor, sigma: Tensor, cond: Cond, g: float) -> Tensor:
        model = self.roles.activate(role)
        batch = x.shape[0]
        # As the pipeline: timestep = 1000 sigma in the latents' dtype, divided by 1000.
        timestep = (sigma.to(self.device).float() * 1000.0).expand(batch).to(self.dtype) / 1000
        forward = lambda h, t, c: self._forward(model, h, t, c)
        with self.precision():
            v = common.guided(forward, x.to(self.dtype), timestep, cond, self._cache, g)
        return v.to(x.dtype)

    def _forward(self, model: nn.Module, h: Tensor, timestep: Tensor, cond: Cond) -> Tensor:
        embeds = cond["prompt_embeds"]
        text_ids = self.pipe._prepare_text_ids(embeds[:1]).to(self.device)
        return model(hidden_states=h, timestep=timestep, guidance=None, encoder_hidden_states=embeds,
                     txt_ids=text_ids, img_ids=self.image_ids, return_dict=False)[0]

    def noise(self, generators: Sequence[torch.Generator]) -> Tensor:
        x, _ = self.pipe.prepare_latents(len(generators), self.pipe.transformer.config.in_channels // 4,
                                         self.cfg.height, self.cfg.width, self.dtype, self.device, list(generators))
        return x.float()

    def vae_latents(self, x: Tensor) -> Tensor:
        """What the pipeline returns for ``output_type="latent"``: tokens unpacked, batch-norm statistics
        undone, 2x2 patches unfolded: ``(B, C, H/f, W/f)``."""
        vae = self.pipe.vae
        ids = self.image_ids.expand(x.shape[0], -1, -1)
        latents = self.pipe._unpack_latents_with_ids(x, ids, *self.grid)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device,
                                                                                            latents.dtype)
        return self.pipe._unpatchify_latents(latents * std + mean)

    def decode(self, x: Tensor) -> Tensor:
        image = self.pipe.vae.decode(self.vae_latents(x).to(self.dtype), return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def _mu(self, num_steps: int) -> float:
        return schedules.flux2_empirical_mu(self.sample_shape[0], num_steps)

    def generator_sigmas(self, step_list: Sequence[int]) -> Tensor:
        return common.shifted_generator_sigmas(step_list, self.pipe.scheduler.config, self._mu(len(step_list)))

    def teacher_sigmas(self, num_steps: int) -> Tensor:
        sigmas = None if self.pipe.scheduler.config.get("use_flow_sigmas", False) else \
            np.linspace(1.0, 1 / num_steps, num_steps)
        return common.scheduler_sigmas(self.pipe.scheduler, num_steps, sigmas=sigmas, mu=self._mu(num_steps))

    def cps_scheduler_config(self) -> dict:
        # The klein pipeline computes its empirical mu itself and passes it to set_timesteps.
        config = self.pipe.scheduler.config
        return {"shift": config.get("shift", 1.0), "use_dynamic_shifting": config.get("use_dynamic_shifting", False)}


def build(cfg: Flux2KleinConfig, *, world=None, device: torch.device, dtype: torch.dtype) -> Flux2KleinBackbone:
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel

    from rtdmd.backbones.loading import from_pretrained, load_pipeline, resolve_folder

    pipe = load_pipeline(Flux2KleinPipeline, cfg.path, device=device, dtype=dtype)
    generator, folder = None, None
    if cfg.generator_path is not None:
        folder = resolve_folder(cfg.generator_path)
        generator = from_pretrained(
            lambda: Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", dtype=dtype), folder)
        generator.to(device).requires_grad_(False).eval()
    return Flux2KleinBackbone(pipe, generator, cfg, device, dtype, generator_folder=folder)
