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
# Published architectures: what a reward's weights must hold

Architecture = Literal["published", "config"]
"""A reward config's ``architecture``: ``published`` (the default) checks the weights' key names and shapes, and
the config's attention heads and activation (not visible in the shapes), against the published model's;
``config`` accepts any model whose weights match its own config (tiny test models, experiments: its scores are
then not the paper's metric). Either way a weights file that does not match its config is refused, because
transformers would otherwise fill the missing tensors with random values and only warn."""

# Buffers that some transformers versions saved with CLIP weights and others do not.
OPTIONAL_KEYS = frozenset({"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"})


@dataclass(frozen=True)
class ClipArchitecture:
    """The sizes of a published CLIP; the key names and shapes of its transformers ``CLIPModel`` weights follow."""

    name: str
    vision_width: int
    vision_layers: int
    vision_heads: int
    patch: int
    image_size: int
    text_width: int
    text_layers: int
    text_heads: int
    context: int
    vocab: int
    projection: int
    hidden_act: str
    mlp_ratio: int = 4

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape of the weights of a transformers ``CLIPModel`` of these sizes."""
        vw, tw, grid = self.vision_width, self.text_width, self.image_size // self.patch
        shapes = {"logit_scale": (), "visual_projection.weight": (self.projection, vw),
                  "text_projection.weight": (self.projection, tw),
                  "text_model.embeddings.token_embedding.weight": (self.vocab, tw),
                  "text_model.embeddings.position_embedding.weight": (self.context, tw),
                  **_norm("text_model.final_layer_norm", tw),
                  "vision_model.embeddings.class_embedding": (vw,),
                  "vision_model.embeddings.patch_embedding.weight": (vw, 3, self.patch, self.patch),
                  "vision_model.embeddings.position_embedding.weight": (grid * grid + 1, vw),
                  **_norm("vision_model.pre_layrnorm", vw), **_norm("vision_model.post_layernorm", vw)}
        for tower, width, layers in (("text_model", tw, self.text_layers), ("vision_model", vw, self.vision_layers)):
            for i in range(layers):
                shapes.update(_block(f"{tower}.encoder.layers.{i}", width, self.mlp_ratio * width))
        return shapes

    def config_mismatch(self, config) -> str | None:
        """What of a transformers ``CLIPConfig`` that the shapes do not show differs from this architecture."""
        found = {"vision heads": config.vision_config.num_attention_heads, "text heads":
                 config.text_config.num_attention_heads, "vision activation": config.vision_config.hidden_act,
                 "text activation": config.text_config.hidden_act}
        published = {"vision heads": self.vision_heads, "text heads": self.text_heads,
                     "vision activation": self.hidden_act, "text activation": self.hidden_act}
        return next((f"{k} {found[k]!r} (published: {published[k]!r})" for k in found if found[k] != published[k]),
                    None)


def _norm(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def _block(prefix: str, width: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """One transformer block of transformers' CLIP encoder."""
    shapes = {**_norm(f"{prefix}.layer_norm1", width), **_norm(f"{prefix}.layer_norm2", width),
              f"{prefix}.mlp.fc1.weight": (hidden, width), f"{prefix}.mlp.fc1.bias": (hidden,),
              f"{prefix}.mlp.fc2.weight": (width, hidden), f"{prefix}.mlp.fc2.bias": (width,)}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{prefix}.self_attn.{proj}.weight"] = (width, width)
        shapes[f"{prefix}.self_attn.{proj}.bias"] = (width,)
    return shapes


# openai/clip-vit-large-patch14 (CLIPScore, and the embedding the LAION aesthetic head reads).
VIT_L_14 = ClipArchitecture("CLIP ViT-L/14 (openai/clip-vit-large-patch14)", vision_width=1024, vision_layers=24,
                            vision_heads=16, patch=14, image_size=224, text_width=768, text_layers=12, text_heads=12,
                            context=77, vocab=49408, projection=768, hidden_act="quick_gelu")
# OpenCLIP ViT-H/14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K): PickScore and HPSv2.1 are fine-tuned from it.
VIT_H_14 = ClipArchitecture("OpenCLIP ViT-H/14", vision_width=1280, vision_layers=32, vision_heads=16, patch=14,
                            image_size=224, text_width=1024, text_layers=24, text_heads=16, context=77, vocab=49408,
                            projection=1024, hidden_act="gelu")


def check_shapes(found: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]], what: str,
                 fix: str) -> None:
    """One :class:`UserError` line when the key names or shapes of ``found`` are not ``expected``'s."""
    found = {k: tuple(v) for k, v in found.items() if k not in OPTIONAL_KEYS}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    other = sorted(k for k in set(expected) & set(found) if found[k] != tuple(expected[k]))
    problems = [f"{len(missing)} keys missing (first {missing[0]!r})" if missing else "",
                f"{len(extra)} unexpected keys (first {extra[0]!r})" if extra else "",
                f"{len(other)} tensors of another shape (first {other[0]!r}: {found[other[0]]} instead of "
                f"{tuple(expected[other[0]])})" if other else ""]
    if missing or extra or other:
        raise UserError(f"{what}: {', '.join(p for p in problems if p)}: {fix}")


def weight_shapes(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the tensors in weight files (a safetensors header is read without loading tensors)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        if file.name.endswith(".index.json"):
            continue
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), "pt") as handle:
                    shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
            except Exception as err:  # a damaged header: any of several exception types
                raise UserError(f"{file} cannot be read as safetensors ({type(err).__name__}): "
                                "re-download it") from None
        else:
            state = load_weights(file)
            shapes.update({k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)})
    return shapes


def check_clip_folder(folder: Path, kind: str, published: ClipArchitecture | None) -> None:
    """Before a CLIP folder loads: its weights match its ``config.json`` and, with ``published``, the
    published model (key names and shapes, attention heads, activation)."""
    from transformers import CLIPConfig, CLIPModel

    try:
        config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # unreadable or not a CLIP config
        raise UserError(f"reward '{kind}': {folder}/config.json is not a CLIP config ({type(err).__name__}): "
                        "restore it from the model's repository") from None
    found = weight_shapes(weight_files(folder))
    where = f"reward '{kind}': the weights in {folder}"
    if published is not None:
        check_shapes(found, published.shapes(), f"{where} are not {published.name}'s",
                     "point the reward's 'path' at that model (or set architecture: config for another CLIP)")
        mismatch = published.config_mismatch(config)
        if mismatch is not None:
            raise UserError(f"reward '{kind}': {folder}/config.json is not {published.name}'s: {mismatch}: restore "
                            "it from the model's repository (or set architecture: config for another CLIP)")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}
    check_shapes(found, expected, f"{where} do not match its config.json",
                 "re-download the weights and config.json from the same repository")


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

