"""The shapes world's two learned reward models (small, CPU-friendly, differentiable in the pixels).

- :class:`ShapesCLIP`: a contrastive image-text model (the CLIPScore analogue). Score = cosine similarity of
  the image and text embeddings, in [-1, 1].
- :class:`ShapesPref`: a preference-style model (the PickScore analogue) trained to predict the oracle's
  verdict; score = the logit of P(the oracle accepts the image for the prompt).

Both read images ``(B, 3, 32, 32)`` in [0, 1] and prompts as words of the world's vocabulary (one token per
word; unknown words share one token). Weights are stored as safetensors with the architecture's keyword
arguments in the file's metadata, so a file is self-describing and loads without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

PAD, UNK = 0, 1


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary: ids ``(B, max_len)``, 0 = padding, 1 = unknown."""

    def __init__(self, words: Sequence[str], max_len: int = 12):
        self.words = list(words)
        self.index = {w: i + 2 for i, w in enumerate(self.words)}
        self.max_len = max_len

    def __call__(self, prompts: Sequence[str]) -> Tensor:
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for row, text in enumerate(prompts):
            tokens = [self.index.get(w, UNK) for w in text.lower().split()][: self.max_len]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids


class ImageEncoder(nn.Module):
    """``(B, 3, 32, 32)`` in [0, 1] -> ``(B, dim)``. Three strided convolutions (32 -> 16 -> 8 -> 4); the last
    feature map is flattened, not pooled, so that where things are (the position tag) survives."""

    def __init__(self, dim: int = 64, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.SiLU(),  # 16x16
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),  # 8x8
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),  # 4x4
        )
        self.head = nn.Linear(2 * w * 16, dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images * 2 - 1).flatten(1))


class TextEncoder(nn.Module):
    """Word ids ``(B, L)`` -> ``(B, dim)``: embeddings + positions, a small transformer, mean over words."""

    def __init__(self, vocab_size: int, dim: int = 64, layers: int = 2, max_len: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids: Tensor) -> Tensor:
        pad = ids == PAD
        h = self.encoder(self.embed(ids) + self.position[: ids.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class ShapesCLIP(nn.Module):
    def __init__(self, words: Sequence[str], dim: int = 64, width: int = 32):
        super().__init__()
        self.config = {"words": list(words), "dim": dim, "width": width}
        self.tokenizer = WordTokenizer(words)
        self.image = ImageEncoder(dim, width)
        self.text = TextEncoder(len(words) + 2, dim)
        self.log_scale = nn.Parameter(torch.tensor(2.66))  # CLIP's initial temperature, log(1 / 0.07)

    def embed_text(self, prompts: Sequence[str]) -> Tensor:
        return nn.functional.normalize(self.text(self.tokenizer(prompts).to(self.log_scale.device)), dim=-1)

    def embed_image(self, images: Tensor) -> Tensor:
        return nn.functional.normalize(self.image(images), dim=-1)

    def forward(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """Cosine similarity ``(B,)`` of each image with its prompt."""
        return (self.embed_image(images) * self.embed_text(prompts)).sum(-1)


class ShapesPref(nn.Module):
    def __init__(self, words: Sequence[str], dim: int = 64, width: int = 32):
        super().__init__()
        self.config = {"words": list(words), "dim": dim, "width": width}
        self.tokenizer = WordTokenizer(words)
        self.image = ImageEncoder(2 * dim, width)
        self.text = TextEncoder(len(words) + 2, dim)
        self.film = nn.Linear(dim, 4 * dim)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, 1))

    def forward(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """Logit ``(B,)`` that the oracle accepts each image for its prompt."""
        h = self.image(images)
        t = self.text(self.tokenizer(prompts).to(h.device))
        scale, shift = self.film(t).chunk(2, dim=-1)
        return self.head(h * (1 + scale) + shift).squeeze(-1)


MODELS = {"clip": ShapesCLIP, "pref": ShapesPref}


def save(model: nn.Module, path: str | Path) -> None:

    tensors = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    kind = next(k for k, cls in MODELS.items() if isinstance(model, cls))
    save_file(tensors, str(path), metadata={"kind": kind, "config": json.dumps(model.config)})


def load(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """A reward net from its safetensors file (architecture from the file's metadata), frozen, in eval mode."""

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    model = MODELS[meta["kind"]](**json.loads(meta["config"]))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False)
