"""PickScore: ``exp(logit_scale) * cos`` of the PickScore CLIP-H image and prompt embeddings (spec section 7).

As in the PickScore authors' reference usage: unit-norm embeddings, scaled by the model's own
``exp(logit_scale)`` (about 100), so that a good image scores about 22. The authors of RTDMD divide it by 26 in
the back-propagation path only; that is the reward entry's ``bp_scale: 0.0385`` in a run config, not part of
this score.

Files (``path`` or ``$RTDMD_REWARDS_ROOT/pickscore/``): ``config.json`` and ``model.safetensors`` of
``yuvalkirstain/PickScore_v1``, plus the tokenizer files and ``preprocessor_config.json`` of its processor
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (in the same folder, or in ``processor_path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from rtdmd.config.strict import check
from rtdmd.devices import torch_dtype
from rtdmd.rewards import clip_common as cc

MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MODEL_NEEDS = (
    cc.Need("PickScore config", ("config.json",), MODEL_REPO, MODEL_REPO, ("config.json",)),
    cc.Need("PickScore weights", cc.CLIP_MODEL_FILES, MODEL_REPO, MODEL_REPO,
            (("model.safetensors", "pytorch_model.bin"),)),
)
PROCESSOR_NEEDS = (
    cc.Need("CLIP-H tokenizer", cc.TOKENIZER_FILES, PROCESSOR_REPO, PROCESSOR_REPO,
            ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")),
    cc.Need("CLIP-H preprocessor config", ("preprocessor_config.json",), PROCESSOR_REPO, PROCESSOR_REPO,
            ("preprocessor_config.json",)),
)


@dataclass(frozen=True)
class PickScoreConfig:
    kind: Literal["pickscore"] = "pickscore"
    # The published CLIP architecture whose config rtdmd plan uses without weights (rtdmd/assets/architectures)
    architecture: ClassVar[str] = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    path: str | None = None  # folder of the PickScore model; default $RTDMD_REWARDS_ROOT/pickscore
    processor_path: str | None = None  # folder of the tokenizer + preprocessor config; default: path
    allow_download: bool = False
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self):
        check(self.path is None or bool(self.path.strip()), "path must be a folder or left unset")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the files are there, unless they may be downloaded."""
        if not self.allow_download:
            locate_files(self)


def locate_files(cfg: PickScoreConfig) -> tuple[Path, Path]:
    """The model folder and the tokenizer / preprocessor folder."""
    folder = cc.locate("pickscore", cc.reward_folder("pickscore", cfg.path), MODEL_NEEDS, cfg.allow_download)
    processor = Path(cfg.processor_path).expanduser() if cfg.processor_path else folder
    return folder, cc.locate("pickscore", processor, PROCESSOR_NEEDS, cfg.allow_download)


def build_pickscore(cfg: PickScoreConfig, *, world=None, device="cpu") -> cc.ClipCosine:
    folder, processor = locate_files(cfg)
    model = cc.load_clip_model(folder, device, torch_dtype(cfg.dtype))
    preprocess = cc.ClipPreprocess.from_folder(processor, model.config.vision_config.image_size)
    embedder = cc.ClipEmbedder(model, cc.load_tokenizer(processor), preprocess)
    scale = float(model.logit_scale.detach().float().exp())
    info = cc.ScorerInfo("pickscore", "exp(logit_scale) * cos(CLIP-H image embedding, text embedding)",
                         tuple(cc.weight_files(folder)), {"logit_scale_exp": scale})
    return cc.ClipCosine(embedder, info, scale=scale)
