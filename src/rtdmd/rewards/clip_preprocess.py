"""CLIP preprocessing written in torch, so that gradients reach the pixels: resize, centre-crop or pad,
normalise. Without rounding to 8 bits it computes what the official processors compute: the bicubic resize with
antialiasing of ``torch.nn.functional.interpolate`` is PIL's bicubic filter (a = -0.5)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rtdmd.errors import UserError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
