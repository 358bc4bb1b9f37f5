"""The soft oracle: a differentiable probability that an image satisfies its prompt, computed from the world's
known geometry. It follows :mod:`.oracle` step by step and makes soft every decision that can carry a gradient:

1. Soft colour masks. Each pixel's distances to the palette colours, to the background and to the oracle's colour
   radius (a "none of them" option) enter a softmax with temperature ``Temperatures.color``. Its argmax is the
   oracle's segmentation (nearest palette colour if nearer than the background and within ``COLOR_RADIUS``).
2. Blobs, as the oracle finds them: connected components of that segmentation per colour, at least ``MIN_AREA``
   pixels, with their bounding boxes and centroids. These are discrete choices: no gradient flows through them.
3. Template correlation per blob: the soft mask of the blob's colour inside its bounding box (minus the pixels of
   other blobs of that colour) against each shape's template drawn in that box (:func:`render.shape_mask`, the
   oracle's templates), by soft intersection-over-union. A blob is an object of shape ``s`` with probability
   ``sigmoid((max_iou - MIN_IOU) / t) x softmax(iou / t')[s]`` (the oracle's threshold and best-template choice);
   a blob larger than ``MAX_BOX`` is unknown (probability 0), as in the oracle.
4. Soft counts and relations. Blobs are independent: "at least n" and "exactly n" are tails of the
   Poisson-binomial count of the matching blobs; a relation holds for some pair of blobs whose centroids satisfy
   it (the oracle's rule); entries multiply.

As every temperature goes to 0 the probability becomes the oracle's 0/1 verdict. The gradient reaches the pixels
through the colour masks of the blobs' boxes: it sharpens colours and shapes of the objects an image has (the
stochastic steps' policy gradient is what adds or removes objects). ``docs/shapes_world.md`` reports the agreement
with the oracle on generator samples (AUC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from rtdmd.worlds.shapes.oracle import COLOR_RADIUS, MAX_BOX, MIN_AREA, MIN_IOU, relation_holds
from rtdmd.worlds.shapes.render import BACKGROUND, COLORS, SHAPES, shape_mask

COLOR_NAMES = tuple(COLORS)


@dataclass(frozen=True)
class Temperatures:
    """Softness of each decision (the hard oracle is the limit of all of them going to 0)."""

    color: float = 0.05  # RGB distance
    threshold: float = 0.05  # sigmoid of iou - MIN_IOU
    shape: float = 0.03  # softmax of the IoUs over shapes


@dataclass(frozen=True)
class SoftBlob:
    """One blob: its colour, centroid (pixels; x right, y down) and the probability of each shape ``(S,)``."""

    color: str
    cx: float
    cy: float
    shape_probability: Tensor


@cache
def template(shape: str, height: int, width: int) -> Tensor:
    return torch.from_numpy(shape_mask(shape, height, width)).float()


def color_logits(images: Tensor, temperature: float) -> Tensor:
    """``(B, C + 2, H, W)``: logits of each palette colour, the background and "none" (beyond the colour radius) per
    pixel. ``images``: ``(B, 3, H, W)`` in [0, 1]."""
    palette = torch.tensor([COLORS[c] for c in COLOR_NAMES], dtype=images.dtype, device=images.device)
    background = torch.tensor(BACKGROUND, dtype=images.dtype, device=images.device)
    to_palette = (images[:, None] - palette[None, :, :, None, None]).square().sum(2).add(1e-12).sqrt()
    to_background = (images - background[None, :, None, None]).square().sum(1, keepdim=True).add(1e-12).sqrt()
    radius = torch.full_like(to_background, COLOR_RADIUS)
    return -torch.cat([to_palette, to_background, radius], dim=1) / temperature


def blobs(masks: Tensor, labels: np.ndarray, t: Temperatures) -> list[SoftBlob]:
    """The blobs of one image: ``masks`` ``(C, H, W)`` soft colour memberships, ``labels`` ``(H, W)`` the hard
    segmentation (colour index, or >= C for background and none)."""
    out = []
    for c, name in enumerate(COLOR_NAMES):
        components, _ = ndimage.label(labels == c)
        for index, box in enumerate(ndimage.find_objects(components), 1):
            own = components[box] == index
            if own.sum() < MIN_AREA:
                continue
            ys, xs = np.nonzero(own)
            cx, cy = float(xs.mean() + box[1].start + 0.5), float(ys.mean() + box[0].start + 0.5)
            h, w = own.shape
            if h > MAX_BOX or w > MAX_BOX:  # several objects merged: unknown
                out.append(SoftBlob(name, cx, cy, masks.new_zeros(len(SHAPES))))
                continue
            others = torch.from_numpy((components[box] != index) & (components[box] > 0)).to(masks.device)
            soft = masks[c][box] * ~others
            ious = []
            for shape in SHAPES:
                tmpl = template(shape, h, w).to(masks)
                inter = (soft * tmpl).sum()
                ious.append(inter / (soft.sum() + tmpl.sum() - inter).clamp_min(1e-6))
            iou = torch.stack(ious)
            present = torch.sigmoid((iou.max() - MIN_IOU) / t.threshold)
            out.append(SoftBlob(name, cx, cy, present * (iou / t.shape).softmax(0)))
    return out


def count_distribution(p: Tensor) -> Tensor:
    """``(n + 1,)``: the Poisson-binomial law of the number of successes of independent events ``p`` ``(n,)``."""
    dist = torch.ones(1, dtype=p.dtype, device=p.device)
    for q in p:
        dist = torch.cat([dist * (1 - q), dist.new_zeros(1)]) + torch.cat([dist.new_zeros(1), dist * q])
    return dist


def _match(found: Sequence[SoftBlob], requirement: Mapping[str, Any], zero: Tensor) -> Tensor:
    """Per blob, the probability that it matches ``requirement`` (class, optional colour)."""
    s = SHAPES.index(requirement["class"])
    color = requirement.get("color")
    values = [b.shape_probability[s] if color in (None, b.color) else zero for b in found]
    return torch.stack(values) if values else zero[None][:0]


def satisfied(found: Sequence[SoftBlob], metadata: Mapping[str, Any], zero: Tensor) -> Tensor:
    """Probability (a scalar tensor) that an image with blobs ``found`` satisfies its prompt's metadata by the
    oracle's rules (counting: exactly ``count``; other tags: at least ``count``; positions: some pair)."""
    include = metadata["include"]
    matches = [_match(found, req, zero) for req in include]
    anchors = {int(req["position"][1]) for req in include if req.get("position")}
    total = zero + 1
    for i, (req, p) in enumerate(zip(include, matches)):
        if req.get("position"):  # some pair in the relation (which implies one of each entry)
            relation, j = req["position"][0], int(req["position"][1])
            pairs = [p[a] * matches[j][b] for a in range(len(found)) for b in range(len(found))
                     if a != b and relation_holds(relation, found[a], found[b])]
            none = torch.stack([1 - q for q in pairs]).prod() if pairs else zero + 1
            total = total * (1 - none)
        elif i not in anchors:
            n = int(req["count"])
            dist = nn.functional.pad(count_distribution(p), (0, max(0, n + 1 - (len(p) + 1))))  # fewer blobs than n
            total = total * (dist[n] if metadata["tag"] == "counting" else dist[n:].sum())
    return total


def soft_score(images: Tensor, metadata: Sequence[Mapping[str, Any]], t: Temperatures = Temperatures()) -> Tensor:
    """``(B,)``: the soft oracle's probability for images ``(B, 3, H, W)`` in [0, 1] and their prompts' metadata."""
    x = images.to(torch.promote_types(images.dtype, torch.float32))
    logits = color_logits(x, t.color)
    masks = logits.softmax(dim=1)[:, : len(COLOR_NAMES)]
    labels = logits.detach().argmax(dim=1).cpu().numpy()
    zero = x.new_zeros(())
    return torch.stack([satisfied(blobs(m, lab, t), meta, zero) for m, lab, meta in zip(masks, labels, metadata)])
