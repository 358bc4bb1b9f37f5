"""Shared pieces of the CLIP-family rewards (CLIPScore, PickScore, Aesthetic, HPSv2.1).

- Where a reward's files live: the config's ``path``, else ``$RTDMD_REWARDS_ROOT/<kind>/``. A missing file is a
  one-line :class:`UserError` naming the files and where they are published; nothing is downloaded unless the
  config says ``allow_download: true`` (then the files go into that same folder, so the next run is offline).
- CLIP preprocessing written in torch (:class:`ClipPreprocess`): resize, centre-crop or pad, normalise, so that
  gradients reach the pixels. Without rounding to 8 bits it computes what the official processors compute: the
  bicubic resize with antialiasing of ``torch.nn.functional.interpolate`` is PIL's bicubic filter (a = -0.5).
- Loading a frozen transformers ``CLIPModel`` and its tokenizer from a local folder, and :class:`ClipEmbedder`:
  unit-norm image embeddings (differentiable) and text embeddings (cached: prompts repeat within a group).
- :class:`ClipCosine`: the reward ``scale * cos(image embedding, text embedding)`` (CLIPScore, HPSv2, PickScore).

Heavy imports (transformers, huggingface_hub) happen inside functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rtdmd.errors import UserError

ROOT_ENV = "RTDMD_REWARDS_ROOT"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------------------
# Where the files are

@dataclass(frozen=True)
class Need:
    """One file a reward needs. ``names`` are alternatives; a tuple alternative ``("a", "b")`` needs both."""

    what: str  # e.g. "CLIP ViT-L/14 weights"
    names: tuple[str | tuple[str, ...], ...]
    source: str  # where it is published, for the error message (a Hugging Face repo id or a URL)
    repo: str | None = None  # Hugging Face repo to fetch from when allow_download
    fetch: tuple[str | tuple[str, ...], ...] = ()  # files to fetch from ``repo``; a tuple: the first that exists

    def present(self, folder: Path) -> bool:
        return any(all((folder / part).is_file() for part in _parts(name)) for name in self.names)

    def describe(self) -> str:
        names = " or ".join(" + ".join(_parts(n)) for n in self.names)
        return f"{self.what} ({names}; published at {self.source})"


def _parts(name: str | tuple[str, ...]) -> tuple[str, ...]:
    return (name,) if isinstance(name, str) else tuple(name)


def reward_folder(kind: str, path: str | None) -> Path:
    """``path`` if given, else ``$RTDMD_REWARDS_ROOT/<kind>``."""
    if path:
        return Path(path).expanduser()
    root = os.environ.get(ROOT_ENV)
    if not root:
        raise UserError(f"reward '{kind}' needs its weights: set its 'path' to a local folder, or set {ROOT_ENV} "
                        f"to a folder that holds '{kind}/' (see docs/rewards.md)")
    return Path(root).expanduser() / kind


def locate(kind: str, folder: Path, needs: Sequence[Need], allow_download: bool) -> Path:
    """Check that ``folder`` holds every need (fetching the missing ones if allowed); return the folder."""
    missing = [n for n in needs if not n.present(folder)]
    if missing and allow_download:
        for need in missing:
            _download(need, folder)
        missing = [n for n in needs if not n.present(folder)]
    if missing:
        hint = "" if allow_download else ", or set allow_download: true"
        raise UserError(f"reward '{kind}': {folder} lacks " + "; ".join(n.describe() for n in missing)
                        + f": put the files there, point the reward's 'path' elsewhere{hint}")
    return folder


def _download(need: Need, folder: Path) -> None:
    if need.repo is None:
        return
    from huggingface_hub import hf_hub_download

    folder.mkdir(parents=True, exist_ok=True)
    for item in need.fetch:
        alternatives = _parts(item)
        for i, name in enumerate(alternatives):
            try:
                hf_hub_download(need.repo, name, local_dir=str(folder))
                break
            except Exception as err:  # network, authentication, missing file: all are the user's to fix
                if i == len(alternatives) - 1:
                    raise UserError(f"could not download {' or '.join(alternatives)} from {need.repo}: "
                                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so that re-hashing multi-GB weights happens once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def weight_files(folder: Path) -> list[Path]:
    """The weight files transformers loads from a model folder (what identifies a scorer's version): the
    safetensors file, else the shards of a safetensors index, else ``pytorch_model.bin``."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        return [index, *(folder / s for s in shards)]
    return [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file() else []


@dataclass
class ScorerInfo:
    """What an evaluation summary records about a scorer: its kind, its definition and its weights' hashes."""

    kind: str
    definition: str
    files: tuple[Path, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from rtdmd import __version__

        return {"kind": self.kind, "definition": self.definition, "rtdmd_version": __version__,
                "weights_sha256": {p.name: file_sha256(p) for p in self.files}, **self.extra}


# ----------------------------------------------------------------------------------------------------------
# Preprocessing in torch

def at_least_fp32(x: Tensor) -> Tensor:
    """float32, or float64 when given float64 (so that a float64 model can be checked by finite differences)."""
    return x if x.dtype == torch.float64 else x.float()


def shortest_edge_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """Output size of a "shortest edge" resize, as transformers (and torchvision) compute it: the short side
    becomes ``shortest``, the long side ``int(shortest * long / short)`` (truncated)."""
    if height <= width:
        return shortest, int(shortest * width / height)
    return int(shortest * height / width), shortest


def longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """Output size of OpenCLIP's ``ResizeMaxSize``: the long side becomes ``longest``, sides are ``round``-ed."""
    scale = longest / max(height, width)
    return round(height * scale), round(width * scale)


def center_crop(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre crop ``(B, C, H, W) -> (B, C, h, w)`` with the top-left corner at ``((H-h)//2, (W-w)//2)``."""
    height, width = images.shape[-2:]
    h, w = size
    if h > height or w > width:
        raise ValueError(f"crop {size} is larger than the resized image {(height, width)}")
    top, left = (height - h) // 2, (width - w) // 2
    return images[..., top:top + h, left:left + w]


def pad_to_square(images: Tensor, size: int) -> Tensor:
    """Zero-pad ``(B, C, h, w)`` to ``size x size``, centred (left/top get the smaller half), as OpenCLIP's
    ``ResizeMaxSize`` does with ``fill=0`` (before normalisation)."""
    pad_h, pad_w = size - images.shape[-2], size - images.shape[-1]
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


@dataclass(frozen=True)
class ClipPreprocess:
    """Differentiable CLIP preprocessing of images in [0, 1].

    ``mode="crop"`` is transformers' ``CLIPImageProcessor`` (resize the shortest edge to ``size``, centre-crop
    ``crop``); ``mode="pad"`` is OpenCLIP's ``resize_longest_max`` transform used by HPSv2 (resize the longest
    edge to ``size``, zero-pad to a square). Both normalise with ``mean``/``std`` afterwards.

    Shape: ``(B, 3, H, W)`` in [0, 1], any H, W -> ``(B, 3, h, w)`` float32 (float64 if given) on the input's
    device.
    """

    size: int = 224
    crop: tuple[int, int] | None = (224, 224)  # None: no crop
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    mode: Literal["crop", "pad"] = "crop"
    resample: Literal["bicubic", "bilinear"] = "bicubic"

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = at_least_fp32(images)
        height, width = x.shape[-2:]
        if self.mode == "crop":
            x = self._resize(x, shortest_edge_size(height, width, self.size))
            if self.crop is not None:
                x = center_crop(x, self.crop)
        else:
            x = pad_to_square(self._resize(x, longest_edge_size(height, width, self.size)), self.size)
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resize(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        # antialias=True is PIL's filter (support scaled when shrinking) in both directions.
        x = F.interpolate(x, size=size, mode=self.resample, antialias=True, align_corners=False)
        # transformers' processor resizes 8-bit PIL images, which clips bicubic overshoot to [0, 1]; OpenCLIP's
        # HPSv2 transform resizes float tensors and does not.
        return x.clamp(0, 1) if self.mode == "crop" else x

    @classmethod
    def from_folder(cls, folder: Path, image_size: int, mode: Literal["crop", "pad"] = "crop") -> ClipPreprocess:
        """Read ``preprocessor_config.json`` (transformers' format) if the folder has one; else the CLIP
        defaults for a model of input size ``image_size`` (bicubic, OpenAI mean/std)."""
        file = folder / "preprocessor_config.json"
        if not file.is_file():
            return cls(size=image_size, crop=(image_size, image_size), mode=mode)
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{file} is not valid JSON ({err}): restore it from the model's repository") from None
        return cls.from_processor_dict(raw, image_size, mode)

    @classmethod
    def from_processor_dict(cls, raw: Mapping[str, Any], image_size: int,
                            mode: Literal["crop", "pad"] = "crop") -> ClipPreprocess:
        def edge(value: Any, default: int) -> int:
            if isinstance(value, int):
                return value
            if isinstance(value, Mapping):
                if "shortest_edge" in value:
                    return int(value["shortest_edge"])
                if value.get("height") == value.get("width") and value.get("height"):
                    return int(value["height"])
            if value is None:
                return default
            raise UserError(f"preprocessor size {value!r} is not supported: use shortest_edge or a square size")

        resample = {2: "bilinear", 3: "bicubic"}.get(raw.get("resample", 3))
        if resample is None:
            raise UserError(f"preprocessor resample={raw.get('resample')} is not supported (2 bilinear, 3 bicubic)")
        if not raw.get("do_resize", True) or not raw.get("do_normalize", True):
            raise UserError("preprocessor configs with do_resize or do_normalize false are not supported")
        size = edge(raw.get("size"), image_size)
        crop_edge = edge(raw.get("crop_size"), size) if raw.get("do_center_crop", True) else None
        return cls(size=size, crop=(crop_edge, crop_edge) if crop_edge else None,
                   mean=tuple(raw.get("image_mean", OPENAI_CLIP_MEAN)), std=tuple(raw.get("image_std", OPENAI_CLIP_STD)),
                   mode=mode, resample=resample)


# ----------------------------------------------------------------------------------------------------------
# Models

CLIP_MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", ("vocab.json", "merges.txt"))

_MODELS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def load_clip_model(folder: Path, device: torch.device | str, dtype: torch.dtype):
    """A frozen ``CLIPModel`` from a local folder (``config.json`` + weights), shared between rewards that use
    the same folder, device and dtype (CLIPScore and Aesthetic both use CLIP ViT-L/14)."""
    key = (str(folder.resolve()), str(device), str(dtype))
    model = _MODELS.get(key)
    if model is None:
        from transformers import CLIPModel

        # use_safetensors=None prefers safetensors; a .bin falls back to torch.load(weights_only=True).
        model = CLIPModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        model = model.to(device).eval().requires_grad_(False)
        _MODELS[key] = model
    return model


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


class ClipEmbedder:
    """Unit-norm CLIP embeddings of images (differentiable w.r.t. the pixels) and of prompts (cached).

    Shape: images ``(B, 3, H, W)`` in [0, 1] -> ``(B, D)``; prompts ``B`` strings -> ``(B, D)``; float32 (float64
    for a float64 model).
    """

    max_cached_prompts = 65536

    def __init__(self, model, tokenizer, preprocess: ClipPreprocess):
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.max_length = min(int(tokenizer.model_max_length), model.config.text_config.max_position_embeddings)
        self._texts: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual_projection.weight.dtype

    def to(self, device: torch.device | str) -> None:
        """Move the CLIP model and the cached text embeddings (``run.reward_offload``)."""
        self.model.to(device)
        self._texts = {k: v.to(device) for k, v in self._texts.items()}

    def images(self, images: Tensor) -> Tensor:
        pixels = self.preprocess(images.to(self.device)).to(self.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(at_least_fp32(self.model.visual_projection(pooled)), dim=-1)

    def texts(self, prompts: Sequence[str]) -> Tensor:
        new = sorted(set(prompts) - self._texts.keys())
        if new:
            if len(self._texts) + len(new) > self.max_cached_prompts:
                self._texts.clear()
            self._texts.update(zip(new, self._encode(new)))
        return torch.stack([self._texts[p] for p in prompts])

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> Tensor:
        # padding="max_length" as OpenCLIP does; the causal mask makes the pooled (first end-of-text) state
        # independent of what follows it.
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        return F.normalize(at_least_fp32(self.model.text_projection(pooled)), dim=-1)


class ClipCosine:
    """``scale * cos(CLIP image embedding, CLIP text embedding)``: CLIPScore and HPSv2 (scale 1), PickScore
    (scale ``exp(logit_scale)``). Differentiable with respect to the images."""

    differentiable = True

    def __init__(self, embedder: ClipEmbedder, info: ScorerInfo, scale: float = 1.0):
        self.embedder = embedder
        self.scale = float(scale)
        self._info = info

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        cos = (self.embedder.images(images) * self.embedder.texts(prompts)).sum(-1)
        return self.scale * cos

    def info(self) -> dict[str, Any]:
        return self._info.as_dict()

    def to(self, device: torch.device | str) -> None:
        self.embedder.to(device)


def load_weights(file: Path):
    """What a weights file holds: a ``.safetensors`` file, or anything else through ``torch.load`` with
    ``weights_only=True`` (never pickled code); an unreadable file is a one-line :class:`UserError`."""
    if Path(file).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{file} cannot be read as weights only ({type(err).__name__}): re-download it, or save "
                        "its state dict as .safetensors") from None

