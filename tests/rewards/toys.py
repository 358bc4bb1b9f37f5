"""Small stand-ins used by the reward tests (also imported by a reward-server subprocess, so keep it light)."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from rtdmd.rewards.compositional import Detection

CLASS_COLORS = {"cat": (1.0, 0.0, 0.0), "dog": (0.0, 0.0, 1.0), "ball": (0.0, 1.0, 0.0)}


def draw(size: int, objects: list[tuple[str, int, int, int]]) -> torch.Tensor:
    """A black ``(3, size, size)`` image with a filled square per ``(class, x0, y0, side)``."""
    image = torch.zeros(3, size, size)
    for cls, x0, y0, side in objects:
        image[:, y0:y0 + side, x0:x0 + side] = torch.tensor(CLASS_COLORS[cls]).view(3, 1, 1)
    return image


def components(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """4-connected components of a boolean mask: (x0, y0, x1, y1, area) each."""
    seen = np.zeros_like(mask, dtype=bool)
    found = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, ys, xs = [(y, x)], [], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            ys.append(cy)
            xs.append(cx)
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        found.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1, len(xs)))
    return found


class SquareOracle:
    """Detects the pure-colour squares :func:`draw` paints; the colour attribute is the colour's name."""

    names = {"cat": "red", "dog": "blue", "ball": "green"}

    def __call__(self, images, specs):
        out = []
        for image in images:
            pixels = image.permute(1, 2, 0).cpu().numpy()
            found = []
            for cls, rgb in CLASS_COLORS.items():
                mask = np.all(np.abs(pixels - np.array(rgb)) < 0.05, axis=-1)
                for x0, y0, x1, y1, area in components(mask):
                    found.append(Detection(cls, (x0, y0, x1, y1), score=float(area), color=self.names[cls]))
            out.append(found)
        return out

    def info(self):
        return {"name": "square-oracle"}


def build_oracle(device="cpu"):
    return SquareOracle()


class Dying:
    """A detector whose process exits in the middle of a request (a crashed scorer)."""

    def __call__(self, images, specs):
        os._exit(3)


def build_dying(device="cpu"):
    return Dying()


class Brightness:
    """Mean pixel value plus a prompt-dependent offset; differentiable."""

    differentiable = True

    def __call__(self, images, prompts, metadata=None):
        offset = torch.tensor([len(p) / 100 for p in prompts], device=images.device)
        return images.float().mean(dim=(1, 2, 3)) + offset


class Slow(Brightness):
    def __init__(self, delay: float):
        self.delay = delay

    def __call__(self, images, prompts, metadata=None):
        time.sleep(self.delay)
        return super().__call__(images, prompts, metadata)
