"""Tiny CLIP models for the reward tests, written to folders in the published layouts and loaded through the
same code path as real weights (``from_pretrained`` of a local folder, tokenizer built locally)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# A byte-level BPE vocabulary in the OpenAI CLIP format: the 256 byte symbols, the same with the end-of-word
# marker, a few merges, then <|startoftext|> and <|endoftext|> last (so end-of-text has the largest id, as in
# the real 49408-token vocabulary, which OpenCLIP's argmax pooling relies on).
MERGES = ("t h", "th e</w>", "o f</w>", "c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>")


def byte_symbols() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def write_tokenizer(folder: Path) -> int:
    """Write ``vocab.json`` + ``merges.txt``; return the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    return len(tokens)


def clip_config(vocab_size: int, *, image_size: int = 32, patch_size: int = 8, width: int = 32,
                projection_dim: int = 24, context: int = 16, hidden_act: str = "quick_gelu"):
    from transformers import CLIPConfig

    ids = {"bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1}
    text = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=context, hidden_act=hidden_act, **ids)
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=patch_size, hidden_act=hidden_act)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim, logit_scale_init_value=4.6052)


def write_clip_folder(folder: Path, *, image_size: int = 32, patch_size: int = 8, seed: int = 0,
                      preprocessor: dict | None = None):
    """A CLIP model folder like ``openai/clip-vit-large-patch14``: config, safetensors weights, tokenizer files
    and (unless ``preprocessor`` is ``{}``) a ``preprocessor_config.json``."""
    from transformers import CLIPModel

    vocab = write_tokenizer(folder)
    torch.manual_seed(seed)
    model = CLIPModel(clip_config(vocab, image_size=image_size, patch_size=patch_size))
    # Random init leaves LayerNorms at identity and tiny projections: perturb everything so that every weight
    # matters (a wrongly mapped or ignored tensor changes the scores).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    if preprocessor != {}:
        proc = preprocessor or {"size": {"shortest_edge": image_size},
                                "crop_size": {"height": image_size, "width": image_size}}
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "CLIPImageProcessor", "do_resize": True, "resample": 3, "do_center_crop": True,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            **proc}), encoding="utf-8")
    return model


def openclip_state_dict(vocab_size: int, *, width: int = 32, text_width: int = 24, layers: int = 2,
                        text_layers: int = 2, patch: int = 7, grid: int = 4, context: int = 16, embed: int = 20,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with OpenCLIP's ViT CLIP keys and shapes (what ``HPS_v2.1_compressed.pt`` holds,
    scaled down), including the stored causal ``attn_mask`` buffer."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        return scale * torch.randn(*shape, generator=g)

    def norm(prefix, d):
        return {f"{prefix}.weight": 1 + rand(d, scale=0.1), f"{prefix}.bias": rand(d, scale=0.1)}

    def blocks(prefix, d, n):
        out = {}
        for i in range(n):
            p = f"{prefix}transformer.resblocks.{i}"
            out |= norm(f"{p}.ln_1", d) | norm(f"{p}.ln_2", d)
            out |= {f"{p}.attn.in_proj_weight": rand(3 * d, d), f"{p}.attn.in_proj_bias": rand(3 * d),
                    f"{p}.attn.out_proj.weight": rand(d, d), f"{p}.attn.out_proj.bias": rand(d),
                    f"{p}.mlp.c_fc.weight": rand(4 * d, d), f"{p}.mlp.c_fc.bias": rand(4 * d),
                    f"{p}.mlp.c_proj.weight": rand(d, 4 * d), f"{p}.mlp.c_proj.bias": rand(d)}
        return out

    state = {"visual.conv1.weight": rand(width, 3, patch, patch), "visual.class_embedding": rand(width),
             "visual.positional_embedding": rand(grid * grid + 1, width), **norm("visual.ln_pre", width),
             **blocks("visual.", width, layers), **norm("visual.ln_post", width), "visual.proj": rand(width, embed),
             "token_embedding.weight": rand(vocab_size, text_width), "positional_embedding": rand(context, text_width),
             **blocks("", text_width, text_layers), **norm("ln_final", text_width),
             "text_projection": rand(text_width, embed), "logit_scale": torch.tensor(4.6052),
             "attn_mask": torch.full((context, context), float("-inf")).triu(1)}
    return state
