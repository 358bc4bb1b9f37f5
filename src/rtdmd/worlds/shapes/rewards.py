"""The shapes world's rewards as registered reward kinds (``rewards/base.py`` contract: images ``(B, 3, 32, 32)``
in [0, 1], prompts, metadata -> ``(B,)`` float32).

- ``shapes_clip``: cosine similarity of a tiny contrastive image-text model (the CLIPScore analogue).
- ``shapes_pref``: logit of a small model trained to predict the oracle's verdict (the PickScore analogue).
- ``shapes_oracle``: the oracle itself, 1.0 if the image satisfies its prompt's metadata else 0.0; not
  differentiable (the GenEval analogue, the held-out signal).
- ``shapes_soft``: the soft oracle (:mod:`.soft_oracle`), the probability that the image satisfies its prompt,
  computed from the world's geometry with every hard decision of the oracle made soft; differentiable, no weights.

The learned ones are read from safetensors (shipped in ``assets/shapes/rewards/``, rebuilt by
``scripts/train_world.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.errors import UserError
from rtdmd.worlds.shapes import ASSETS, nets, oracle, soft_oracle
from rtdmd.worlds.shapes.render import IMAGE_SIZE


@dataclass(frozen=True)
class ShapesCLIPConfig:
    kind: Literal["shapes_clip"] = "shapes_clip"
    weights: str = ""  # safetensors file; "" = the shipped model


@dataclass(frozen=True)
class ShapesPrefConfig:
    kind: Literal["shapes_pref"] = "shapes_pref"
    weights: str = ""


@dataclass(frozen=True)
class ShapesOracleConfig:
    kind: Literal["shapes_oracle"] = "shapes_oracle"


@dataclass(frozen=True)
class ShapesSoftConfig:
    kind: Literal["shapes_soft"] = "shapes_soft"
    output: Literal["probability", "log"] = "probability"  # log: log(p + floor), steeper where p is small
    floor: float = 1e-3
    color_temperature: float = soft_oracle.Temperatures.color
    threshold_temperature: float = soft_oracle.Temperatures.threshold
    shape_temperature: float = soft_oracle.Temperatures.shape

    def __post_init__(self):
        check(self.floor > 0, f"floor must be positive, got {self.floor}")
        for name in ("color", "threshold", "shape"):
            value = getattr(self, f"{name}_temperature")
            check(value > 0, f"{name}_temperature must be positive, got {value}")


def _check_images(images: Tensor) -> None:

    if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"shapes rewards score (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) images, got "
                        f"{tuple(images.shape)}: use them with the shapes world's teacher")


class LearnedReward:
    """A frozen reward net; gradients flow to the images (not to its weights)."""

    differentiable = True

    def __init__(self, net: torch.nn.Module, device: torch.device, kind: str = "", weights: Path | None = None):
        self.net = net.to(device)
        self.device = device
        self.kind = kind
        self.weights = weights

    def info(self) -> dict[str, Any]:
        """What an evaluation protocol records: the kind and the sha256 of the weights file."""
        files = [] if self.weights is None else [self.weights]
        return {"kind": self.kind, "definition": "learned reward of the shapes world",
                "weights_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}}

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        _check_images(images)
        return self.net(images.to(self.device, torch.float32), list(prompts)).float()


class OracleReward:
    differentiable = False

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        _check_images(images)
        _check_metadata("shapes_oracle", images, metadata)
        verdicts = oracle.score(images.detach().float().cpu().numpy(), metadata)
        return torch.as_tensor(verdicts, dtype=torch.float32, device=images.device)

    def info(self) -> dict[str, Any]:
        return {"kind": "shapes_oracle", "definition": "the shapes world's pixel oracle (no weights)"}


def _check_metadata(kind: str, images: Tensor, metadata) -> None:
    if metadata is None or len(metadata) != len(images) or not all("include" in m for m in metadata):
        raise UserError(f"the {kind} reward needs GenEval metadata (tag, include) for every prompt: "
                        "use the shapes world's prompt files")


class SoftOracleReward:
    """The soft oracle as a reward: gradients flow to the images."""

    differentiable = True

    def __init__(self, cfg: ShapesSoftConfig):
        self.cfg = cfg
        self.temperatures = soft_oracle.Temperatures(cfg.color_temperature, cfg.threshold_temperature,
                                                     cfg.shape_temperature)

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        _check_images(images)
        _check_metadata("shapes_soft", images, metadata)
        p = soft_oracle.soft_score(images, metadata, self.temperatures)
        return torch.log(p + self.cfg.floor) if self.cfg.output == "log" else p

    def info(self) -> dict[str, Any]:
        return {"kind": "shapes_soft", "definition": "the shapes world's soft oracle (no weights)",
                "output": self.cfg.output, "temperatures": dataclasses.asdict(self.temperatures)}


def _weights_file(weights: str, default: str) -> Path:
    path = Path(weights) if weights else ASSETS / "rewards" / default
    if not path.is_file():
        raise UserError(f"reward weights {path} not found: give a .safetensors file written by "
                        "scripts/train_world.py (or leave 'weights' empty for the shipped one)")
    return path


def _learned(kind: str, weights: str, default: str, device) -> LearnedReward:
    path = _weights_file(weights, default)
    return LearnedReward(nets.load(path, device), torch.device(device), kind, path)


def build_clip(cfg: ShapesCLIPConfig, *, world=None, device="cpu") -> LearnedReward:
    return _learned("shapes_clip", cfg.weights, "clip.safetensors", device)


def build_pref(cfg: ShapesPrefConfig, *, world=None, device="cpu") -> LearnedReward:
    return _learned("shapes_pref", cfg.weights, "pref.safetensors", device)


def build_oracle(cfg: ShapesOracleConfig, *, world=None, device="cpu") -> OracleReward:
    return OracleReward()


def build_soft(cfg: ShapesSoftConfig, *, world=None, device="cpu") -> SoftOracleReward:
    return SoftOracleReward(cfg)
