"""HPSv2.1: the cosine between the HPSv2.1-tuned OpenCLIP ViT-H/14's image and prompt embeddings (spec 7).

The published checkpoint (``HPS_v2.1_compressed.pt`` of ``xswu/HPSv2``) is an OpenCLIP state dict (under the key
``state_dict``). We load it into an equivalent transformers ``CLIPModel`` (no open_clip dependency) through the
key mapping below, and build the model's config from the tensors' shapes (only the head counts and the
activation are not visible in the shapes: ViT-H/14 has 16 heads in both towers and exact GELU).

Key mapping, OpenCLIP -> transformers (``T``: transposed, because OpenCLIP stores ``x @ proj`` matrices and
transformers ``nn.Linear`` weights)::

    visual.conv1.weight                       vision_model.embeddings.patch_embedding.weight
    visual.class_embedding                    vision_model.embeddings.class_embedding
    visual.positional_embedding               vision_model.embeddings.position_embedding.weight
    visual.ln_pre.{weight,bias}               vision_model.pre_layrnorm.{weight,bias}
    visual.transformer.resblocks.{i}.X        vision_model.encoder.layers.{i}.Y   (X -> Y below)
    visual.ln_post.{weight,bias}              vision_model.post_layernorm.{weight,bias}
    visual.proj                               visual_projection.weight (T)
    token_embedding.weight                    text_model.embeddings.token_embedding.weight
    positional_embedding                      text_model.embeddings.position_embedding.weight
    transformer.resblocks.{i}.X               text_model.encoder.layers.{i}.Y
    ln_final.{weight,bias}                    text_model.final_layer_norm.{weight,bias}
    text_projection                           text_projection.weight (T)
    logit_scale                               logit_scale

    X (per block)                             Y
    ln_1.{weight,bias}                        layer_norm1.{weight,bias}
    attn.in_proj_weight  (3d, d)              self_attn.{q,k,v}_proj.weight  (rows [0:d], [d:2d], [2d:3d])
    attn.in_proj_bias    (3d,)                self_attn.{q,k,v}_proj.bias
    attn.out_proj.{weight,bias}               self_attn.out_proj.{weight,bias}
    ln_2.{weight,bias}                        layer_norm2.{weight,bias}
    mlp.c_fc.{weight,bias}                    mlp.fc1.{weight,bias}
    mlp.c_proj.{weight,bias}                  mlp.fc2.{weight,bias}

``attn_mask`` (OpenCLIP's stored causal mask) is dropped: transformers builds the same mask. A ``module.``
prefix (a DDP-saved checkpoint) is stripped. Any other key is an error, so another architecture never loads
silently; with ``architecture: published`` (the default) the mapped shapes must also be the published ViT-H/14's.
Equivalences the mapping relies on: OpenCLIP pools the text at ``argmax(token ids)`` (the end-of-text
token has the largest id) and transformers at the first end-of-text token: the same position; OpenCLIP
applies ``ln_post`` to all tokens then takes token 0, transformers takes token 0 then applies it.

Preprocessing is HPSv2's own inference transform (OpenCLIP ``resize_longest_max``): resize the longest side to
224 (bicubic, antialiased), zero-pad to a square, normalise with the OpenAI CLIP mean/std. For square images
this is a plain resize. Score: ``cos`` (HPSv2's ``image_features @ text_features.T`` of unit vectors), about
0.28-0.32 for good models (spec section 8).

Files (``path`` or ``$RTDMD_REWARDS_ROOT/hpsv2/``): the checkpoint, and the tokenizer files of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (any OpenAI-CLIP BPE tokenizer: ``tokenizer.json`` or
``vocab.json`` + ``merges.txt``), there or in ``tokenizer_path``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.devices import torch_dtype
from rtdmd.errors import UserError
from rtdmd.rewards import clip, clip_architectures, clip_preprocess, loading

HPS_REPO = "xswu/HPSv2"
TOKENIZER_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
TOKENIZER_NEED = loading.Need("OpenCLIP ViT-H/14 tokenizer", clip.TOKENIZER_FILES, TOKENIZER_REPO, TOKENIZER_REPO,
                         ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                          "special_tokens_map.json"))

TOP_LEVEL = {
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "visual.proj": ("visual_projection.weight", True),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),
    "text_projection.weight": ("text_projection.weight", False),  # OpenCLIP towers with an nn.Linear projection
    "logit_scale": ("logit_scale", False),
}
BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
         "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
DROPPED = {"attn_mask"}
_BLOCK_KEY = re.compile(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)")


@dataclass(frozen=True)
class HPSv2Config:
    kind: Literal["hpsv2"] = "hpsv2"
    # The published CLIP architecture whose config rtdmd plan uses without weights (rtdmd/assets/architectures)
    published_clip: ClassVar[str] = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    path: str | None = None  # folder of the checkpoint; default $RTDMD_REWARDS_ROOT/hpsv2
    checkpoint: str = "HPS_v2.1_compressed.pt"  # or HPS_v2_compressed.pt (v2.0), or a .safetensors
    tokenizer_path: str | None = None  # default: path
    allow_download: bool = False
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    preprocess: Literal["pad", "crop"] = "pad"  # pad: HPSv2's own transform; crop: CLIPImageProcessor's
    vision_heads: int = 16  # ViT-H/14 (not visible in the tensor shapes)
    text_heads: int = 16
    hidden_act: Literal["gelu", "quick_gelu"] = "gelu"
    architecture: clip_architectures.Architecture = "published"  # published: the checkpoint must be OpenCLIP ViT-H/14's

    def __post_init__(self):
        check(self.vision_heads >= 1 and self.text_heads >= 1, "vision_heads and text_heads must be >= 1")
        published = clip_architectures.VIT_H_14
        check(self.architecture == "config" or (self.vision_heads, self.text_heads, self.hidden_act) == (
              published.vision_heads, published.text_heads, published.hidden_act),
              f"vision_heads, text_heads and hidden_act must be {published.name}'s ({published.vision_heads}, "
              f"{published.text_heads}, {published.hidden_act}): set architecture: config for another checkpoint")
        check(bool(self.checkpoint.strip()), "checkpoint must name a file")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the files are there, unless they may be downloaded."""
        if not self.allow_download:
            locate_files(self)


def strip_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def openclip_to_transformers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and split / transpose) an OpenCLIP CLIP state dict into transformers ``CLIPModel`` keys."""
    out: dict[str, Tensor] = {}
    for key, value in strip_prefix(state).items():
        if key in DROPPED:
            continue
        block = _BLOCK_KEY.fullmatch(key)
        if block is not None:
            prefix = f"{'vision_model' if block[1] else 'text_model'}.encoder.layers.{block[2]}."
            rest = block[3]
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                param = rest.rsplit("_", 1)[1]
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}_proj.{param}"] = part
                continue
            module, _, param = rest.rpartition(".")
            if module not in BLOCK:
                raise UserError(f"unexpected key {key!r} in the HPSv2 checkpoint: not an OpenCLIP ViT block")
            out[f"{prefix}{BLOCK[module]}.{param}"] = value
            continue
        if key not in TOP_LEVEL:
            raise UserError(f"unexpected key {key!r} in the HPSv2 checkpoint: not an OpenCLIP ViT CLIP")
        target, transpose = TOP_LEVEL[key]
        out[target] = value.t() if transpose else value
    return out


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.ln_1\.weight")
    return len({m[1] for k in state if (m := pattern.fullmatch(k))})


def clip_config(state: Mapping[str, Tensor], *, vision_heads: int, text_heads: int, hidden_act: str,
                token_ids: Mapping[str, int]):
    """A transformers ``CLIPConfig`` equivalent to the OpenCLIP checkpoint ``state`` (original keys)."""
    from transformers import CLIPConfig

    state = strip_prefix(state)
    required = ("visual.class_embedding", "visual.conv1.weight", "visual.positional_embedding", "visual.proj",
                "token_embedding.weight", "positional_embedding",
                "visual.transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_fc.weight")
    for key in required:
        if key not in state:
            raise UserError(f"the HPSv2 checkpoint lacks {key!r}: it is not an OpenCLIP ViT CLIP state dict")
    vision_width = state["visual.class_embedding"].shape[0]
    text_width = state["token_embedding.weight"].shape[1]
    grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
    patch = state["visual.conv1.weight"].shape[-1]
    projection = state["visual.proj"].shape[1]
    for width, heads, tower in ((vision_width, vision_heads, "vision"), (text_width, text_heads, "text")):
        if width % heads:
            raise UserError(f"{tower} width {width} is not divisible by {tower}_heads={heads}")
    common = {"hidden_act": hidden_act, "layer_norm_eps": 1e-5}
    vision = {"hidden_size": vision_width, "num_attention_heads": vision_heads, "image_size": grid * patch,
              "patch_size": patch, "num_hidden_layers": _count_blocks(state, "visual."),
              "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0], **common}
    text = {"hidden_size": text_width, "num_attention_heads": text_heads,
            "vocab_size": state["token_embedding.weight"].shape[0],
            "max_position_embeddings": state["positional_embedding"].shape[0],
            "num_hidden_layers": _count_blocks(state, ""),
            "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], **common, **token_ids}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)


def load_checkpoint(file: Path) -> dict[str, Tensor]:
    """The OpenCLIP state dict of an HPS checkpoint: ``{"state_dict": {...}}`` or a flat dict (.pt/.safetensors)."""
    raw = loading.load_weights(file)
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping):
        raise UserError(f"{file} holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def check_published(state: Mapping[str, Tensor], file: Path) -> None:
    """The checkpoint's tensors, renamed, have the key names and shapes of the published ViT-H/14."""
    clip_architectures.check_shapes({k: v.shape for k, v in openclip_to_transformers(state).items()}, clip_architectures.VIT_H_14.shapes(),
                    f"reward 'hpsv2': {file} is not an {clip_architectures.VIT_H_14.name} checkpoint",
                    f"download {file.name} of {HPS_REPO} (or set architecture: config)")


def clip_from_openclip(state: Mapping[str, Tensor], config, dtype: torch.dtype):
    """A frozen transformers ``CLIPModel`` holding exactly the checkpoint's tensors (every key accounted for)."""
    from transformers import CLIPModel

    mapped = openclip_to_transformers(state)
    with torch.device("meta"):
        expected = set(CLIPModel(config).state_dict())
    missing, extra = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or extra:
        raise UserError(f"the HPSv2 checkpoint does not match the architecture its shapes imply "
                        f"(missing {missing[:3]}, unexpected {extra[:3]}): check vision_heads/text_heads")
    model = CLIPModel.from_pretrained(None, config=config, state_dict=mapped, dtype=dtype)
    return model.eval().requires_grad_(False)


def locate_files(cfg: HPSv2Config) -> tuple[Path, Path]:
    """The checkpoint folder and the tokenizer folder."""
    need = loading.Need("HPSv2 checkpoint", (cfg.checkpoint,), HPS_REPO, HPS_REPO, (cfg.checkpoint,))
    folder = loading.locate("hpsv2", loading.reward_folder("hpsv2", cfg.path), (need,), cfg.allow_download)
    tokenizer_folder = Path(cfg.tokenizer_path).expanduser() if cfg.tokenizer_path else folder
    return folder, loading.locate("hpsv2", tokenizer_folder, (TOKENIZER_NEED,), cfg.allow_download)


def build_hpsv2(cfg: HPSv2Config, *, world=None, device="cpu") -> clip.ClipCosine:
    folder, tokenizer_folder = locate_files(cfg)
    tokenizer = clip.load_tokenizer(tokenizer_folder)
    state = load_checkpoint(folder / cfg.checkpoint)
    if cfg.architecture == "published":
        check_published(state, folder / cfg.checkpoint)
    ids = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = clip_config(state, vision_heads=cfg.vision_heads, text_heads=cfg.text_heads,
                         hidden_act=cfg.hidden_act, token_ids=ids)
    model = clip_from_openclip(state, config, torch_dtype(cfg.dtype)).to(device)
    size = config.vision_config.image_size
    preprocess = clip_preprocess.ClipPreprocess(size=size, crop=(size, size) if cfg.preprocess == "crop" else None,
                                   mode=cfg.preprocess)
    info = loading.ScorerInfo("hpsv2", "cos(HPSv2 OpenCLIP ViT-H/14 image embedding, text embedding)",
                         (folder / cfg.checkpoint,), {"checkpoint": cfg.checkpoint})
    return clip.ClipCosine(clip.ClipEmbedder(model, tokenizer, preprocess), info)
