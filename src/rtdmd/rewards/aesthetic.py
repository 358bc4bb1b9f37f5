"""Aesthetic: the LAION "improved aesthetic predictor" (spec section 7, an evaluation metric).

An MLP on the L2-normalised CLIP ViT-L/14 image embedding (768-d): ``Linear(768, 1024) - Dropout - Linear(1024,
128) - Dropout - Linear(128, 64) - Dropout - Linear(64, 16) - Linear(16, 1)``, no non-linearity, so at inference
(dropout off) it is one affine map applied layer by layer. Scores are on a 1-10 scale (about 5.5-6 for a good
text-to-image model, spec section 8). The prompt is not used.

Files: ``sac+logos+ava1-l14-linearMSE.pth`` (a plain state dict with keys ``layers.{0,2,4,6,7}.{weight,bias}``,
read with ``torch.load(weights_only=True)``; a ``.safetensors`` with the same keys also works) in ``path`` or
``$RTDMD_REWARDS_ROOT/aesthetic/``, and the CLIP ViT-L/14 transformers folder in ``clip_path`` (default
``$RTDMD_REWARDS_ROOT/clipscore/``, the folder CLIPScore uses, so both share one model in memory).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from rtdmd.config.strict import check
from rtdmd.devices import torch_dtype
from rtdmd.errors import UserError
from rtdmd.rewards import clip, clip_architectures, clipscore, loading

MLP_STEM = "sac+logos+ava1-l14-linearMSE"
# The published head's layers: index in ``layers`` (Dropouts between them hold no weights) -> (out, in).
MLP_LAYERS = {0: (1024, 768), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}
MLP_SHAPES = {f"layers.{i}.{p}": shape if p == "weight" else shape[:1] for i, shape in MLP_LAYERS.items()
              for p in ("weight", "bias")}
MLP_NEED = loading.Need("LAION aesthetic MLP", (f"{MLP_STEM}.pth", f"{MLP_STEM}.safetensors"),
                   "github.com/christophschuhmann/improved-aesthetic-predictor (mirror: "
                   "huggingface.co/camenduru/improved-aesthetic-predictor)",
                   "camenduru/improved-aesthetic-predictor", (f"{MLP_STEM}.pth",))


@dataclass(frozen=True)
class AestheticConfig:
    kind: Literal["aesthetic"] = "aesthetic"
    path: str | None = None  # folder of the MLP file; default $RTDMD_REWARDS_ROOT/aesthetic
    clip_path: str | None = None  # folder of CLIP ViT-L/14; default $RTDMD_REWARDS_ROOT/clipscore
    allow_download: bool = False
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # of the CLIP model; the MLP runs in fp32
    # published: the MLP's and CLIP ViT-L/14's shapes are checked (rewards/clip_architectures.py)
    architecture: clip_architectures.Architecture = "published"

    def __post_init__(self):
        check(self.path is None or bool(self.path.strip()), "path must be a folder or left unset")

    def preflight(self, config=None) -> None:
        """Before any model loads (rtdmd.train.preflight): the files are there, unless they may be downloaded."""
        if not self.allow_download:
            locate_files(self)


def load_state_dict(file: Path) -> dict[str, Tensor]:
    state = loading.load_weights(file)
    if not isinstance(state, Mapping):
        raise UserError(f"{file} does not hold a state dict")
    return dict(state)


def check_published(state: Mapping[str, Tensor], file: Path) -> None:
    """The state dict has the key names and shapes of the published head (768-1024-128-64-16-1)."""
    clip_architectures.check_shapes({k: v.shape for k, v in state.items()}, MLP_SHAPES,
                                    f"reward 'aesthetic': {file} is not the published LAION head (768-1024-128-64-16-1)",
                                    "re-download it (or set architecture: config)")


def mlp_from_state_dict(state: Mapping[str, Tensor]) -> nn.Sequential:
    """The chain of ``Linear`` layers stored under ``layers.<i>.weight/bias`` (in index order), checked to be a
    ``D -> ... -> 1`` chain. Dropout layers hold no weights, so their indices are simply absent."""
    index = {}
    for key in state:
        match = re.fullmatch(r"(?:layers\.)?(\d+)\.(weight|bias)", key)
        if match is None:
            raise UserError(f"unexpected key {key!r} in the aesthetic MLP: expected layers.<i>.weight/bias")
        index.setdefault(int(match[1]), {})[match[2]] = state[key]
    layers = []
    for i in sorted(index):
        weight, bias = index[i].get("weight"), index[i].get("bias")
        if weight is None or bias is None or weight.ndim != 2:
            raise UserError(f"aesthetic MLP layer {i} needs a 2-D weight and a bias")
        if layers and layers[-1].out_features != weight.shape[1]:
            raise UserError(f"aesthetic MLP layer {i} takes {weight.shape[1]} inputs, the previous gives "
                            f"{layers[-1].out_features}")
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.data.copy_(weight.float())
        linear.bias.data.copy_(bias.float())
        layers.append(linear)
    if not layers or layers[-1].out_features != 1:
        raise UserError("the aesthetic MLP must end in a single output")
    return nn.Sequential(*layers).eval().requires_grad_(False)


class AestheticReward:
    """``MLP(normalise(CLIP image embedding))``; differentiable with respect to the images."""

    differentiable = True

    def __init__(self, embedder: clip.ClipEmbedder, mlp: nn.Sequential, info: loading.ScorerInfo):
        self.embedder = embedder
        self.mlp = mlp
        self._info = info

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        return self.mlp(self.embedder.images(images)).squeeze(-1)

    def to(self, device) -> None:
        self.embedder.to(device)
        self.mlp.to(device)

    def info(self) -> dict[str, Any]:
        return self._info.as_dict()


def locate_files(cfg: AestheticConfig) -> tuple[Path, Path]:
    """The MLP folder and the CLIP ViT-L/14 folder."""
    folder = loading.locate("aesthetic", loading.reward_folder("aesthetic", cfg.path), (MLP_NEED,), cfg.allow_download)
    if cfg.clip_path is None and not os.environ.get(loading.ROOT_ENV):
        raise UserError(f"reward 'aesthetic' needs CLIP ViT-L/14: set its 'clip_path' to the folder of "
                        f"{clipscore.REPO}, or set {loading.ROOT_ENV} (then <root>/clipscore/ is used)")
    return folder, loading.locate("aesthetic", loading.reward_folder("clipscore", cfg.clip_path), clipscore.NEEDS,
                             cfg.allow_download)


def build_aesthetic(cfg: AestheticConfig, *, world=None, device="cpu") -> AestheticReward:
    folder, clip_folder = locate_files(cfg)
    file = next(folder / n for n in MLP_NEED.names if (folder / n).is_file())
    state = load_state_dict(file)
    if cfg.architecture == "published":
        check_published(state, file)
    mlp = mlp_from_state_dict(state).to(device)
    embedder = clipscore.load_embedder(clip_folder, device, torch_dtype(cfg.dtype), cfg.architecture, "aesthetic")
    dim = embedder.model.config.projection_dim
    if mlp[0].in_features != dim:
        raise UserError(f"the aesthetic MLP takes {mlp[0].in_features}-d embeddings but the CLIP model in "
                        f"{clip_folder} gives {dim}-d: it needs CLIP ViT-L/14")
    info = loading.ScorerInfo("aesthetic", "LAION improved-aesthetic MLP(normalised CLIP ViT-L/14 image embedding)",
                         (file, *loading.weight_files(clip_folder)))
    return AestheticReward(embedder, mlp, info)
