"""Simple image statistics for watching reward hacking, and within-prompt diversity.

All functions take images ``(N, 3, H, W)`` in [0, 1] (numpy or anything ``np.asarray`` accepts) and return
floats averaged over the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVELS = 4  # colour histogram: 4 levels per channel, 64 bins


def mean_intensity(images: np.ndarray) -> float:
    """Mean pixel value over channels, pixels and images."""
    return float(np.asarray(images, np.float64).mean())


def saturation(images: np.ndarray) -> float:
    """Mean HSV saturation ``(max - min) / max`` over pixels (0 where ``max = 0``)."""
    x = np.asarray(images, np.float64)
    hi, lo = x.max(axis=1), x.min(axis=1)
    return float(np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-12), 0.0).mean())


def color_entropy(images: np.ndarray) -> float:
    """Mean per-image entropy (bits) of the histogram of colours quantised to ``LEVELS`` per channel."""
    x = np.asarray(images, np.float64)
    q = np.clip((x * LEVELS).astype(np.int64), 0, LEVELS - 1)  # (N, 3, H, W)
    codes = (q[:, 0] * LEVELS + q[:, 1]) * LEVELS + q[:, 2]  # (N, H, W)
    entropies = []
    for c in codes.reshape(len(codes), -1):
        p = np.bincount(c, minlength=LEVELS ** 3) / c.size
        p = p[p > 0]
        entropies.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(entropies))


def within_prompt_diversity(images: np.ndarray, prompts: Sequence[str]) -> float:
    """Mean over prompts (with at least two images) of the mean pairwise RMS pixel distance
    ``sqrt(mean((a - b)^2))`` between that prompt's images; NaN if no prompt has two images."""
    x = np.asarray(images, np.float64).reshape(len(prompts), -1)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    per_prompt = []
    for rows in groups.values():
        if len(rows) < 2:
            continue
        g = x[rows]
        sq = ((g[:, None, :] - g[None, :, :]) ** 2).mean(-1)  # (k, k)
        iu = np.triu_indices(len(rows), 1)
        per_prompt.append(np.sqrt(sq[iu]).mean())
    return float(np.mean(per_prompt)) if per_prompt else float("nan")


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels``: the probability that a positive scores above
    a negative, ties counting one half (Mann-Whitney). NaN without both classes."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if y.all() or not y.any():
        return float("nan")
    ranks = np.empty(len(s))
    order = np.argsort(s, kind="mergesort")
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s):  # average ranks over ties
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
