"""The soft oracle: a differentiable probability that an image satisfies its prompt, computed from the world's
known geometry (the same palette, templates, grid and rules as :mod:`.oracle`, with every hard decision made soft).

1. Soft colour masks. Each pixel's distances to the palette colours, to the background and to the oracle's colour
   radius (a "none of them" option) enter a softmax with temperature ``color_temperature``: in the limit it is the
   oracle's segmentation (nearest palette colour if nearer than the background and within ``COLOR_RADIUS``).
2. Template correlations per grid cell. In each cell's window and for each colour, the soft mask is compared with
   each shape's template (:func:`render.shape_mask`, the oracle's templates) at every placement in the window, by
   soft intersection-over-union; the best placement counts (a smooth maximum).
3. Soft objects. A cell holds a (colour, shape) object with probability ``sigmoid((iou - MIN_IOU) / t) x
   softmax_shape(iou / t')``: the oracle's threshold and its best-template choice, made soft.
4. Soft counts and relations. Cells are treated as independent: "at least n" and "exactly n" are tails of the
   Poisson-binomial count over the nine cells; a relation holds for a pair of cells on the right side of each
   other (centroid offsets of a whole cell, beyond the oracle's half-cell margin); entries multiply.

The output is the probability in [0, 1] (or its logarithm). The probability tracks the oracle's verdict on the
images the world's models draw, whose objects sit on the grid; off-grid objects are invisible to it (the oracle
would still see them), which is one way the two can disagree. ``docs/shapes_world.md`` reports the agreement
(AUC on generator samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import Tensor

from rtdmd.worlds.shapes.oracle import COLOR_RADIUS, MIN_IOU
from rtdmd.worlds.shapes.render import BACKGROUND, BORDER, CELL, COLORS, GRID, OBJECT, SHAPES, shape_mask

COLOR_NAMES = tuple(COLORS)
WINDOW = CELL  # each cell's window: the whole cell, so a template may sit up to one pixel off centre


@dataclass(frozen=True)
class Temperatures:
    """Softness of each decision (the hard oracle is the limit of all of them going to 0)."""

    color: float = 0.05  # RGB distance
    placement: float = 0.02  # smooth maximum of the IoU over placements
    threshold: float = 0.05  # sigmoid of iou - MIN_IOU
    shape: float = 0.03  # softmax of the IoUs over shapes


@cache
def placed_templates() -> Tensor:
    """``(S, P, WINDOW, WINDOW)`` float: each shape's template at every placement ``P`` of an ``OBJECT``-pixel box
    inside a cell window."""
    span = WINDOW - OBJECT + 1
    out = torch.zeros(len(SHAPES), span * span, WINDOW, WINDOW)
    for s, shape in enumerate(SHAPES):
        mask = torch.from_numpy(shape_mask(shape, OBJECT, OBJECT)).float()
        for p in range(span * span):
            dy, dx = divmod(p, span)
            out[s, p, dy:dy + OBJECT, dx:dx + OBJECT] = mask
    return out


def color_masks(images: Tensor, temperature: float) -> Tensor:
    """``(B, C, H, W)``: each pixel's soft membership of each palette colour. ``images``: ``(B, 3, H, W)`` in [0, 1]."""
    palette = torch.tensor([COLORS[c] for c in COLOR_NAMES], dtype=images.dtype, device=images.device)
    background = torch.tensor(BACKGROUND, dtype=images.dtype, device=images.device)
    to_palette = (images[:, None] - palette[None, :, :, None, None]).square().sum(2).add(1e-12).sqrt()
    to_background = (images - background[None, :, None, None]).square().sum(1, keepdim=True).add(1e-12).sqrt()
    radius = torch.full_like(to_background, COLOR_RADIUS)
    logits = -torch.cat([to_palette, to_background, radius], dim=1) / temperature
    return logits.softmax(dim=1)[:, : len(COLOR_NAMES)]


def cell_windows(masks: Tensor) -> Tensor:
    """``(B, C, GRID * GRID, WINDOW, WINDOW)``: the cell windows of soft colour masks ``(B, C, H, W)``, row-major."""
    rows = []
    for r in range(GRID):
        for c in range(GRID):
            y, x = BORDER + r * CELL, BORDER + c * CELL
            rows.append(masks[:, :, y:y + WINDOW, x:x + WINDOW])
    return torch.stack(rows, dim=2)


def cell_objects(images: Tensor, t: Temperatures = Temperatures()) -> Tensor:
    """``(B, G, C, S)``: probability that grid cell ``G`` holds an object of colour ``C`` and shape ``S``."""
    windows = cell_windows(color_masks(images, t.color))  # (B, C, G, W, W)
    templates = placed_templates().to(images)  # (S, P, W, W)
    inter = torch.einsum("bcgyx,spyx->bcgsp", windows, templates)
    union = windows.sum((-2, -1))[..., None, None] + templates.sum((-2, -1)) - inter
    iou = inter / union.clamp_min(1e-6)  # (B, C, G, S, P)
    best = t.placement * torch.logsumexp(iou / t.placement, dim=-1)  # smooth max over placements
    best = best.clamp(max=1.0)
    present = torch.sigmoid((best.amax(-1, keepdim=True) - MIN_IOU) / t.threshold)
    which = (best / t.shape).softmax(-1)
    return (present * which).permute(0, 2, 1, 3)  # (B, G, C, S)


def match_probability(objects: Tensor, requirement: Mapping[str, Any]) -> Tensor:
    """``(G,)``: per cell, the probability of an object matching ``requirement`` (class, optional colour) given one
    image's ``objects`` ``(G, C, S)``."""
    per_shape = objects[:, :, SHAPES.index(requirement["class"])]  # (G, C)
    if "color" in requirement:
        return per_shape[:, COLOR_NAMES.index(requirement["color"])]
    return per_shape.sum(-1).clamp(max=1.0)


def count_distribution(p: Tensor) -> Tensor:
    """``(n + 1,)``: the Poisson-binomial law of the number of successes of independent events ``p`` ``(n,)``."""
    dist = torch.ones(1, dtype=p.dtype, device=p.device)
    for q in p:
        dist = torch.cat([dist * (1 - q), dist.new_zeros(1)]) + torch.cat([dist.new_zeros(1), dist * q])
    return dist


def cell_relation(relation: str) -> Tensor:
    """``(G, G)`` bool: cell ``i`` is ``relation`` cell ``j`` by more than the oracle's margin (half a cell)."""
    rows = torch.arange(GRID * GRID) // GRID
    cols = torch.arange(GRID * GRID) % GRID
    dx = cols[:, None] - cols[None, :]
    dy = rows[:, None] - rows[None, :]
    return {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[relation]


def satisfied(objects: Tensor, metadata: Mapping[str, Any]) -> Tensor:
    """Probability (a scalar tensor) that one image with ``objects`` ``(G, C, S)`` satisfies its prompt's metadata,
    by the oracle's rules (counting: exactly ``count``; other tags: at least ``count``; positions: some pair)."""
    include = metadata["include"]
    matches = [match_probability(objects, req) for req in include]
    anchors = {int(req["position"][1]) for req in include if req.get("position")}
    total = objects.new_ones(())
    for i, (req, p) in enumerate(zip(include, matches)):
        if req.get("position"):  # some pair in the relation (which implies one of each entry)
            relation, j = req["position"][0], int(req["position"][1])
            pairs = p[:, None] * matches[j][None, :] * cell_relation(relation).to(p)
            total = total * -torch.expm1(torch.log1p(-pairs.clamp(max=1 - 1e-6)).sum())
        elif i not in anchors:
            dist, n = count_distribution(p), int(req["count"])
            total = total * (dist[n] if metadata["tag"] == "counting" else dist[n:].sum())
    return total


def soft_score(images: Tensor, metadata: Sequence[Mapping[str, Any]], t: Temperatures = Temperatures()) -> Tensor:
    """``(B,)``: the soft oracle's probability for images ``(B, 3, H, W)`` in [0, 1] and their prompts' metadata."""
    objects = cell_objects(images.to(torch.promote_types(images.dtype, torch.float32)), t)
    return torch.stack([satisfied(o, m) for o, m in zip(objects, metadata)])
