"""The published models' transformers, built on the ``meta`` device (shapes only, no weights, no download), so that
parameter counts, LoRA sizes and the cost of a role switch are measured on the real architectures.

The configs are the ``transformer/config.json`` of the published diffusers folders (facts, not code): SD3-Medium
(``stabilityai/stable-diffusion-3-medium-diffusers``), SD3.5-Medium (``stabilityai/stable-diffusion-3.5-medium``),
FLUX.1-dev (``black-forest-labs/FLUX.1-dev``), FLUX.2-klein base 4B / 9B (``black-forest-labs/FLUX.2-klein-base-4B``,
``-9B``; the step-distilled klein generators have the same architecture). LoRA targets are the recipes' (spec 4.7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rtdmd.backbones import common, flux2_klein


@dataclass(frozen=True)
class RealModel:
    name: str
    cls: str  # diffusers class
    config: dict
    targets: tuple[str, ...]
    two_bases: bool = False  # klein: the generator runs on its own (step-distilled) transformer
    # Prompt embedding of one prompt as the backbone caches it: (tokens, width) + pooled width (0: none).
    cond_tokens: int = 0
    cond_width: int = 0
    pooled_width: int = 0


SD3_COMMON = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16)
KLEIN_COMMON = dict(patch_size=1, in_channels=128, attention_head_dim=128, mlp_ratio=3.0,
                    axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, timestep_guidance_channels=256,
                    guidance_embeds=False)

MODELS = [
    # SD3: CLIP-L (77 tokens) and CLIP-G concatenated and padded to 4096, then T5 (max_sequence_length 128).
    RealModel("SD3-Medium", "SD3Transformer2DModel", {**SD3_COMMON, "pos_embed_max_size": 192},
              common.ATTENTION_TARGETS, cond_tokens=77 + 128, cond_width=4096, pooled_width=2048),
    RealModel("SD3.5-Medium", "SD3Transformer2DModel",
              {**SD3_COMMON, "pos_embed_max_size": 384, "dual_attention_layers": tuple(range(13)),
               "qk_norm": "rms_norm"},
              common.ATTENTION_TARGETS, cond_tokens=77 + 128, cond_width=4096, pooled_width=2048),
    RealModel("FLUX.1-dev", "FluxTransformer2DModel",
              dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                   guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
              common.ATTENTION_TARGETS, cond_tokens=512, cond_width=4096, pooled_width=768),
    RealModel("FLUX.2-klein 4B", "Flux2Transformer2DModel",
              {**KLEIN_COMMON, "num_layers": 5, "num_single_layers": 20, "num_attention_heads": 24,
               "joint_attention_dim": 7680},
              flux2_klein.KLEIN_TARGETS, two_bases=True, cond_tokens=512, cond_width=7680),
    RealModel("FLUX.2-klein 9B", "Flux2Transformer2DModel",
              {**KLEIN_COMMON, "num_layers": 8, "num_single_layers": 24, "num_attention_heads": 32,
               "joint_attention_dim": 12288},
              flux2_klein.KLEIN_TARGETS, two_bases=True, cond_tokens=512, cond_width=12288),
]


def build_meta(model: RealModel) -> nn.Module:
    """The transformer on the meta device (no memory, no weights), frozen as the backbones freeze it."""
    import diffusers

    with torch.device("meta"):
        module = getattr(diffusers, model.cls)(**model.config)
    return module.requires_grad_(False).eval()


def numel(module: nn.Module) -> int:
    """Parameters and buffers (each tensor once)."""
    return sum(t.numel() for t in {id(t): t for t in [*module.parameters(), *module.buffers()]}.values())
