"""PickScore: ``exp(logit_scale) * cos`` of the PickScore CLIP-H image and prompt embeddings (spec section 7).

As in the PickScore authors' reference usage: unit-norm embeddings, scaled by the model's own
``exp(logit_scale)`` (about 100), so that a good image scores about 22. The authors of RTDMD divide it by 26 in
the back-propagation path only; that is the reward entry's ``bp_scale: 0.0385`` in a run config, not part of
this score.

Files (``path`` or ``$RTDMD_REWARDS_ROOT/pickscore/``): ``config.json`` and ``model.safetensors`` of
``yuvalkirstain/PickScore_v1``, plus the tokenizer files and ``preprocessor_config.json`` of its processor
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (in the same folder, or in ``processor_path``). Before loading, the
weights' key names and shapes are checked against the published ViT-H/14 (``architecture: published``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from rtdmd.config.strict import check
from rtdmd.devices import torch_dtype
from rtdmd.rewards import clip, clip_architectures, clip_preprocess, loading

MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MODEL_NEEDS = (
    loading.Need("PickScore config", ("config.json",), MODEL_REPO, MODEL_REPO, ("config.json",)),
    loading.Need("PickScore weights", clip.CLIP_MODEL_FILES, MODEL_REPO, MODEL_REPO,
            (("model.safetensors", "pytorch_model.bin"),)),
)
PROCESSOR_NEEDS = (
    loading.Need("CLIP-H tokenizer", clip.TOKENIZER_FILES, PROCESSOR_REPO, PROCESSOR_REPO,
            ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")),
    loading.Need("CLIP-H preprocessor config", ("preprocessor_config.json",), PROCESSOR_REPO, PROCESSOR_REPO,
            ("preprocessor_config.json",)),
)


@dataclass(frozen=True)
class PickScoreConfig:
    kind: Literal["pickscore"] = "pickscore"
    # The published CLIP architecture whose config rtdmd plan uses without weights (rtdmd/assets/architectures)
    published_clip: ClassVar[str] = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    path: str | None = None  # folder of the PickScore model; default $RTDMD_REWARDS_ROOT/pickscore
    processor_path: str | None = None  # folder of the tokenizer + preprocessor config; default: path
    allow_download: bool = False
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    # published: the weights must be CLIP-H/14's (rewards/clip_architectures.py)
    architecture: clip_architectures.Architecture = "published"

    def __post_init__(self):
        check(self.path is None or bool(self.path.strip()), "path must be a folder or left unset")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the files are there, unless they may be downloaded."""
        if not self.allow_download:
            locate_files(self)


def locate_files(cfg: PickScoreConfig) -> tuple[Path, Path]:
    """The model folder and the tokenizer / preprocessor folder."""
    folder = loading.locate("pickscore", loading.reward_folder("pickscore", cfg.path), MODEL_NEEDS, cfg.allow_download)
    processor = Path(cfg.processor_path).expanduser() if cfg.processor_path else folder
    return folder, loading.locate("pickscore", processor, PROCESSOR_NEEDS, cfg.allow_download)


def build_pickscore(cfg: PickScoreConfig, *, world=None, device="cpu") -> clip.ClipCosine:
    folder, processor = locate_files(cfg)
    published = clip_architectures.VIT_H_14 if cfg.architecture == "published" else None
    clip_architectures.check_clip_folder(folder, "pickscore", published)
    model = clip.load_clip_model(folder, device, torch_dtype(cfg.dtype))
    preprocess = clip_preprocess.ClipPreprocess.from_folder(processor, model.config.vision_config.image_size)
    embedder = clip.ClipEmbedder(model, clip.load_tokenizer(processor), preprocess)
    scale = float(model.logit_scale.detach().float().exp())
    info = loading.ScorerInfo("pickscore", "exp(logit_scale) * cos(CLIP-H image embedding, text embedding)",
                         tuple(loading.weight_files(folder)), {"logit_scale_exp": scale})
    return clip.ClipCosine(embedder, info, scale=scale)
