"""The oracle: checks an image against its prompt's metadata from the pixels alone (the GenEval analogue).

1. Colour segmentation: each pixel takes the nearest palette colour if that colour is nearer than the
   background and within ``COLOR_RADIUS``; otherwise it is background.
2. Connected components per colour (4-connectivity); components under ``MIN_AREA`` pixels are noise.
3. Shape: each blob is matched against the three templates drawn at its own bounding box
   (:func:`render.shape_mask`); the best intersection-over-union names it if it reaches ``MIN_IOU``, else it
   is ``unknown``. (Fill ratio alone cannot tell small circles from triangles; template matching can.)
4. Centroids give positions; a relation holds when the centroid offset exceeds half a cell.

Per tag (GenEval's rules): counting needs exactly ``count`` matching objects, every other tag at least
``count``; positions need one matching pair in the relation. Overall accuracy is the mean of the per-tag
accuracies, as GenEval reports it. Not differentiable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from rtdmd.worlds.shapes.render import BACKGROUND, CELL, COLORS, OBJECT, SHAPES, shape_mask

COLOR_RADIUS = 0.45  # RGB distance; palette colours lie >= 0.8 apart, ~0.5-0.64 from the background
MIN_AREA = 12  # pixels; the smallest object (a triangle) covers ~36
MAX_BOX = OBJECT + 4  # a bounding box larger than this is several objects merged: unknown
MIN_IOU = 0.6
RELATION_MARGIN = CELL / 2

_PALETTE = np.asarray(list(COLORS.values()), np.float32)  # (C, 3)
_COLOR_NAMES = list(COLORS)


@dataclass(frozen=True)
class Blob:
    color: str
    shape: str  # one of SHAPES or "unknown"
    cx: float  # centroid, pixels (x to the right, y downwards)
    cy: float
    area: int
    iou: float


def segment(image: np.ndarray) -> np.ndarray:
    """Colour index per pixel ``(H, W)`` (into the palette), -1 for background. ``image``: ``(3, H, W)`` in [0, 1]."""
    pixels = np.moveaxis(np.asarray(image, np.float32), 0, -1)  # (H, W, 3)
    to_palette = np.linalg.norm(pixels[:, :, None, :] - _PALETTE, axis=-1)  # (H, W, C)
    to_background = np.linalg.norm(pixels - np.asarray(BACKGROUND, np.float32), axis=-1)
    nearest = to_palette.argmin(-1)
    best = to_palette.min(-1)
    return np.where((best < to_background) & (best < COLOR_RADIUS), nearest, -1)


def classify(mask: np.ndarray) -> tuple[str, float]:
    """Best template for a blob's mask cropped to its bounding box: ``(shape or "unknown", iou)``."""
    h, w = mask.shape
    if h > MAX_BOX or w > MAX_BOX:
        return "unknown", 0.0
    ious = []
    for shape in SHAPES:
        template = shape_mask(shape, h, w)
        ious.append((template & mask).sum() / max((template | mask).sum(), 1))
    k = int(np.argmax(ious))
    return (SHAPES[k] if ious[k] >= MIN_IOU else "unknown"), float(ious[k])


def detect(image: np.ndarray) -> list[Blob]:
    """All blobs of one image ``(3, H, W)`` in [0, 1]."""
    labels = segment(image)
    blobs = []
    for c, name in enumerate(_COLOR_NAMES):
        components, n = ndimage.label(labels == c)
        for index, box in enumerate(ndimage.find_objects(components), 1):
            mask = components[box] == index
            area = int(mask.sum())
            if area < MIN_AREA:
                continue
            shape, iou = classify(mask)
            ys, xs = np.nonzero(mask)
            blobs.append(Blob(name, shape, float(xs.mean() + box[1].start + 0.5),
                              float(ys.mean() + box[0].start + 0.5), area, iou))
    return blobs


def relation_holds(relation: str, a: Blob, b: Blob) -> bool:
    dx, dy = a.cx - b.cx, a.cy - b.cy
    return {"left of": dx < -RELATION_MARGIN, "right of": dx > RELATION_MARGIN,
            "above": dy < -RELATION_MARGIN, "below": dy > RELATION_MARGIN}[relation]


def _matches(blobs: Sequence[Blob], req: Mapping[str, Any]) -> list[Blob]:
    return [b for b in blobs if b.shape == req["class"] and ("color" not in req or b.color == req["color"])]


def check(blobs: Sequence[Blob], metadata: Mapping[str, Any]) -> bool:
    """Whether the detected blobs satisfy the prompt's metadata (GenEval's rules, module docstring)."""
    include = metadata["include"]
    found = [_matches(blobs, req) for req in include]
    for req, hits in zip(include, found):
        n = len(hits)
        if (n != req["count"]) if metadata["tag"] == "counting" else (n < req["count"]):
            return False
        if req.get("position"):
            relation, j = req["position"][0], int(req["position"][1])
            if not any(relation_holds(relation, a, b) for a in hits for b in found[j]):
                return False
    return True


def score(images: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Per-image verdicts ``(B,)`` bool for images ``(B, 3, H, W)`` in [0, 1]."""
    return np.array([check(detect(img), meta) for img, meta in zip(images, metadata)], dtype=bool)


def accuracy(correct: Sequence[bool], tags: Sequence[str]) -> dict[str, float]:
    """Per-tag accuracy over the images of each tag present, and ``overall`` = their mean (GenEval)."""
    correct = np.asarray(correct, bool)
    tags = np.asarray(tags)
    out = {tag: float(correct[tags == tag].mean()) for tag in dict.fromkeys(tags.tolist())}
    out["overall"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out
