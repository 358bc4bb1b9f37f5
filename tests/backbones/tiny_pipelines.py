"""Tiny random diffusers pipelines of the three families, built in code with locally made tokenizers and saved
to a folder, so that tests exercise the real loading path (``from_pretrained`` of a diffusers folder).

Sizes follow diffusers' own fast tests (a layer or two, a few heads of 8-16 channels); every component is
seeded so that a folder is reproducible.
"""

from __future__ import annotations

from pathlib import Path

import torch

# A character-level vocabulary: every byte-level symbol is a token (no merges), so any prompt tokenizes.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def _alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def clip_tokenizer(max_length: int = 16):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _alphabet():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"] + [chr(c) for c in range(33, 127)]
    return T5Tokenizer(vocab=[(p, 0.0 if i < 3 else -1.0) for i, p in enumerate(pieces)], extra_ids=0)


def qwen_tokenizer():
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(_alphabet())}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]})
    tok.add_special_tokens({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _clip_text(with_projection: bool, hidden: int, projection: int, vocab: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=16, projection_dim=projection,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu")
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _t5(d_model: int, vocab: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab, d_model=d_model, d_ff=2 * d_model, d_kv=8, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, decoder_start_token_id=0)
    torch.manual_seed(seed)
    return T5EncoderModel(config)


def _save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def sd3_pipeline(folder: Path, *, pixel_space: bool = False, with_t5: bool = True, shift: float = 3.0) -> Path:
    """SD3-style pipeline: two CLIP encoders with projection + T5, latent VAE (16 x /2 here) or pixel space
    (``vae`` and ``text_encoder_3`` null, as the embedded world ships)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    channels = 3 if pixel_space else 4
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=channels, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=16, out_channels=channels,
                                        pos_embed_max_size=16, dual_attention_layers=(0,), qk_norm="rms_norm")
    vae = None
    if not pixel_space:
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=channels,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=1, sample_size=16,
                            scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                            use_post_quant_conv=False)
    clip_tok = clip_tokenizer()
    vocab = len(clip_tok)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift), vae=vae,
        text_encoder=_clip_text(True, 8, 8, vocab, 1), tokenizer=clip_tok,
        text_encoder_2=_clip_text(True, 8, 8, vocab, 2), tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5(32, len(t5_tokenizer()), 3) if with_t5 else None,
        tokenizer_3=t5_tokenizer() if with_t5 else None)
    return _save(pipe, folder)


def flux1_pipeline(folder: Path, *, guidance_embeds: bool = True) -> Path:
    """FLUX.1-style pipeline: CLIP (pooled) + T5, AutoencoderKL with 2x downsampling, packed 2x2 latents."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=8, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 4, 8))
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=1, sample_size=16, scaling_factor=0.3611,
                        shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    clip_tok = clip_tokenizer()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=_clip_text(False, 8, 8, len(clip_tok), 1),
                        tokenizer=clip_tok, text_encoder_2=_t5(32, len(t5_tokenizer()), 3),
                        tokenizer_2=t5_tokenizer(), transformer=transformer)
    return _save(pipe, folder)


def flux2_klein_pipeline(folder: Path, *, is_distilled: bool = False, seed: int = 0) -> Path:
    """FLUX.2-klein-style pipeline: Qwen3 causal LM with a chat template (2 layers, both stacked), the Flux2
    VAE with non-trivial batch-norm statistics, patchified 2x2 latents."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                          timestep_guidance_channels=256, axes_dims_rope=(4, 4, 4, 4),
                                          guidance_embeds=False)
    tok = qwen_tokenizer()
    config = Qwen3Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=128)
    torch.manual_seed(1)
    text_encoder = Qwen3ForCausalLM(config)
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(sample_size=16, in_channels=3, out_channels=3,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             block_out_channels=(4, 8), layers_per_block=1, latent_channels=4, norm_num_groups=1,
                             use_quant_conv=False, use_post_quant_conv=False)
    # Non-trivial batch-norm statistics, so that forgetting them shows up in decode and parity tests.
    vae.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, vae.bn.running_mean.numel()))
    vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, vae.bn.running_var.numel()))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    pipe = Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                              transformer=transformer, is_distilled=is_distilled)
    return _save(pipe, folder)
