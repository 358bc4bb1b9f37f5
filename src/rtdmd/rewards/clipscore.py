"""CLIPScore: the cosine between CLIP ViT-L/14's image and prompt embeddings (spec section 7).

Definition used here: the raw cosine, in [-1, 1] (typical values 0.29-0.32 for a good text-to-image model,
the numbers of spec section 8). torchmetrics' ``CLIPScore`` reports ``max(100 * cos, 0)`` instead; the authors'
code reports ``logits_per_image / 100`` = ``exp(logit_scale) / 100 * cos``, which is the cosine for OpenAI's
CLIP ViT-L/14 (``exp(logit_scale) = 100``). We neither multiply by 100 nor clamp, so that the reward's gradient
is never cut at 0.

Files (``path`` or ``$RTDMD_REWARDS_ROOT/clipscore/``): the transformers folder of ``openai/clip-vit-large-patch14``
(``config.json``, ``model.safetensors``, tokenizer files, ``preprocessor_config.json``). Before loading, the
weights' key names and shapes are checked against the published ViT-L/14 (``architecture: published``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from rtdmd.config.strict import check
from rtdmd.devices import torch_dtype
from rtdmd.rewards import clip, clip_architectures, clip_preprocess, loading

REPO = "openai/clip-vit-large-patch14"
NEEDS = (
    loading.Need("CLIP config", ("config.json",), REPO, REPO, ("config.json",)),
    loading.Need("CLIP weights", clip.CLIP_MODEL_FILES, REPO, REPO, (("model.safetensors", "pytorch_model.bin"),)),
    loading.Need("CLIP tokenizer", clip.TOKENIZER_FILES, REPO, REPO,
            ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")),
    loading.Need("CLIP preprocessor config", ("preprocessor_config.json",), REPO, REPO, ("preprocessor_config.json",)),
)


@dataclass(frozen=True)
class ClipScoreConfig:
    kind: Literal["clipscore"] = "clipscore"
    # The published CLIP architecture whose config rtdmd plan uses without weights (rtdmd/assets/architectures)
    published_clip: ClassVar[str] = "openai/clip-vit-large-patch14"
    path: str | None = None  # folder of the CLIP model; default $RTDMD_REWARDS_ROOT/clipscore
    allow_download: bool = False  # fetch missing files from the Hugging Face Hub into that folder
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    # published: the weights must be CLIP ViT-L/14's (rewards/clip_architectures.py)
    architecture: clip_architectures.Architecture = "published"

    def __post_init__(self):
        check(self.path is None or bool(self.path.strip()), "path must be a folder or left unset")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the files are there, unless they may be downloaded."""
        if not self.allow_download:
            locate_files(self)


def locate_files(cfg: ClipScoreConfig) -> Path:
    return loading.locate("clipscore", loading.reward_folder("clipscore", cfg.path), NEEDS, cfg.allow_download)


def load_embedder(folder, device, dtype, architecture: clip_architectures.Architecture,
                  kind: str = "clipscore") -> clip.ClipEmbedder:
    """CLIP ViT-L/14's embedder, its weights checked first (``architecture``,
    :mod:`~rtdmd.rewards.clip_architectures`)."""
    published = clip_architectures.VIT_L_14 if architecture == "published" else None
    clip_architectures.check_clip_folder(folder, kind, published)
    model = clip.load_clip_model(folder, device, dtype)
    preprocess = clip_preprocess.ClipPreprocess.from_folder(folder, model.config.vision_config.image_size)
    return clip.ClipEmbedder(model, clip.load_tokenizer(folder), preprocess)


def build_clipscore(cfg: ClipScoreConfig, *, world=None, device="cpu") -> clip.ClipCosine:
    folder = locate_files(cfg)
    embedder = load_embedder(folder, device, torch_dtype(cfg.dtype), cfg.architecture)
    info = loading.ScorerInfo("clipscore", "cos(CLIP image embedding, CLIP text embedding), raw (no x100, no clamp)",
                         tuple(loading.weight_files(folder)))
    return clip.ClipCosine(embedder, info)
