"""What the benchmarks run on: SD3 pipelines of two sizes built in code (random weights: timings and byte counts
do not depend on the values), a tiny CLIPScore reward, a prompt file, and run configs for both stages.

- ``tiny``: the test suite's SD3 pipeline (``tests/backbones/tiny_pipelines.py``): 2 joint blocks of width 16,
  16 px images through a /2 VAE, 16 image tokens. Python overhead dominates its milliseconds-long forwards.
- ``small``: the embedded shapes world's architecture (6 joint blocks, 4 heads x 32 = width 128), 32 px through a
  /2 VAE, patch 2 (64 image tokens): a forward costs tens of milliseconds, so it says more about real models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tests.backbones import tiny_pipelines

PROMPTS = ["a red cube", "two blue balls", "a green tree", "three stars", "a black cat", "a white dog",
           "an orange car", "a purple bird"]  # short: the tiny text encoders read 16 tokens of characters


@dataclass(frozen=True)
class Size:
    name: str
    layers: int
    heads: int
    head_dim: int
    image: int  # pixels per side
    max_sequence_length: int  # T5 tokens
    lora_rank: int  # keeps rank / width near the real models' (32 / 1536 for SD3-M is 1/48)


SIZES = {
    "tiny": Size("tiny", 2, 2, 8, 16, 8, 4),
    "small": Size("small", 6, 4, 32, 32, 16, 4),
}


def sd3_folder(folder: Path, size: Size) -> Path:
    """An SD3 pipeline folder of ``size`` (two CLIP text encoders + T5, AutoencoderKL with a /2 latent)."""
    if (folder / "model_index.json").is_file():
        return folder
    if size.name == "tiny":
        return tiny_pipelines.sd3_pipeline(folder)
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    width = size.heads * size.head_dim
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=size.image // 2, patch_size=2, in_channels=4,
                                        num_layers=size.layers, attention_head_dim=size.head_dim,
                                        num_attention_heads=size.heads, joint_attention_dim=64,
                                        caption_projection_dim=width, pooled_projection_dim=32, out_channels=4,
                                        pos_embed_max_size=size.image // 2)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=size.image, scaling_factor=1.5305,
                        shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    tokenizer = tiny_pipelines.clip_tokenizer()

    def clip(seed: int):
        torch.manual_seed(seed)
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16, projection_dim=16, bos_token_id=0, eos_token_id=1,
            pad_token_id=1, hidden_act="gelu"))

    t5_tokenizer = tiny_pipelines.t5_tokenizer()
    torch.manual_seed(3)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=64, d_ff=128, d_kv=16, num_layers=1,
                                 num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip(1), tokenizer=tokenizer, text_encoder_2=clip(2), tokenizer_2=tiny_pipelines.clip_tokenizer(),
        text_encoder_3=t5, tokenizer_3=t5_tokenizer)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def clip_folder(folder: Path) -> Path:
    """A tiny CLIP model in the layout of openai/clip-vit-large-patch14, for the CLIPScore reward."""
    if not (folder / "config.json").is_file():
        from tests.rewards import tiny_clip

        tiny_clip.write_clip_folder(folder, seed=1)
    return folder


def run_config(root: Path, size: Size, *, distill: dict | None = None, align: dict | None = None,
               preset: str = "paper") -> dict:
    """A raw config of both stages on the SD3 pipeline of ``size`` with CLIPScore (differentiable) as the reward.
    The stage sections follow the recipes' structure (spec 4.7, 5.7-5.8) with the benchmark's batch sizes."""
    root.mkdir(parents=True, exist_ok=True)
    prompts = root.parent / "train.txt"  # shared by every run in the folder: stage 2 checks the world is stage 1's
    prompts.write_text("\n".join(PROMPTS) + "\n")
    backbone = {"kind": "sd3", "path": str(sd3_folder(root.parent / f"sd3_{size.name}", size)),
                "height": size.image, "width": size.image, "max_sequence_length": size.max_sequence_length,
                "teacher_guidance": 4.5, "rank": size.lora_rank, "alpha": 2.0 * size.lora_rank}
    return {
        "world": {"kind": "prompts", "train": str(prompts)},
        "backbone": backbone,
        "reward": {"kind": "clipscore", "path": str(clip_folder(root.parent / "clip")), "architecture": "config"},
        "preset": preset,
        "distill": {"iterations": 10, "batch_size": 4, "fake_update_ratio": 10, "checkpoint_every": 0,
                    "log_every": 1, **(distill or {})},
        "align": {"iterations": 4, "prompts_per_iteration": 2, "group_size": 4, "micro_batch": 0,
                  "checkpoint_every": 0, "log_every": 1, "ema_every": 1, **(align or {})},
        "run": {"progress": False, "device": "cpu", "eval_samples": 1},
    }
