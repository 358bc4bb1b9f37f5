"""A differentiable image reward for tests of the training loops on tiny backbones: closeness of the mean
brightness to a target. Registered for a test with :func:`registered` (the registry stays the only map)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import pytest

from rtdmd import registry


@dataclass(frozen=True)
class BrightnessConfig:
    kind: Literal["brightness"] = "brightness"
    target: float = 0.8


class Brightness:
    differentiable = True

    def __init__(self, target: float):
        self.target = target

    def __call__(self, images, prompts, metadata=None):
        return -(images.float().mean((1, 2, 3)) - self.target) ** 2


def build(cfg: BrightnessConfig, *, world=None, device="cpu") -> Brightness:
    return Brightness(cfg.target)


@contextlib.contextmanager
def registered():
    with pytest.MonkeyPatch.context() as mp:
        entry = ("tests.backbones.image_reward", "BrightnessConfig", "build")
        mp.setitem(registry.KINDS["reward"], "brightness", entry)
        yield
