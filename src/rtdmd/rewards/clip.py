"""The CLIP model the CLIP-family rewards (CLIPScore, PickScore, Aesthetic, HPSv2.1) share: a frozen transformers
``CLIPModel`` and tokenizer from a local folder (shared between rewards that use the same folder, device and
dtype), :class:`ClipEmbedder` (unit-norm image embeddings, differentiable; text embeddings, cached: prompts
repeat within a group) and :class:`ClipCosine`, the reward ``scale * cos(image, text)``. transformers is
imported only when a model is loaded."""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rtdmd.rewards.clip_preprocess import ClipPreprocess, at_least_fp32
from rtdmd.rewards.loading import ScorerInfo

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
