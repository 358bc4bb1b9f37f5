"""Evaluation over a prompt set: generate, save, score with every reward, summarise with the protocol.

:func:`evaluate` takes a ``generate(prompts, seeds) -> images (B, 3, H, W) in [0, 1]`` callable (``rtdmd
evaluate`` wires it to a trained run or a backbone), a :class:`~rtdmd.data.prompts.PromptSet`, the rewards and
the protocol, and writes into ``out_dir``:

- ``images/<prompt index:05d>_<seed>.png``: every image (8-bit RGB; its ``rtdmd`` text chunk holds the prompt,
  the seed and ``protocol.extra``: for a trained run, the run, stage, step, checkpoint and checkpoint hash);
- ``scores.jsonl``: one line per image, ``{"index", "prompt", "seed", "file", "tag", "scores": {name: value}}``;
- ``summary.json``: the protocol (prompt set path, sha256 and size, seeds, steps, CFG, resolution, anything in
  ``protocol.extra``), the scorers (name, weight, kind, definition, weight-file hashes), and per score the mean
  and std over images plus, when the metadata has tags, the per-tag means and their mean (GenEval's overall
  score is that mean of per-tag accuracies).

Scores are computed on the images as saved (rounded to 8 bits), so that re-scoring the PNG files with the same
scorer gives the same numbers (and other codebases, which score saved images, are comparable).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from rtdmd.data.prompts import PromptSet
from rtdmd.errors import UserError
from rtdmd.rewards.base import RewardSet, WeightedReward

Generate = Callable[[Sequence[str], Sequence[int]], Tensor]


@dataclass(frozen=True)
class EvalProtocol:
    """What makes two evaluations comparable; all of it goes into ``summary.json``."""

    seeds: tuple[int, ...] = (0,)  # one image per prompt per seed
    steps: int | None = None  # sampler steps (NFE as the generator counts them)
    cfg: float | None = None  # guidance scale (None: no CFG)
    resolution: tuple[int, int] | None = None  # (H, W); checked against the generated images when given
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. run directory, checkpoint step, eta

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"evaluation seeds must be a non-empty list of distinct integers, got {list(self.seeds)}")


def prompt_set_digest(prompts: PromptSet, path: str | Path | None) -> dict[str, Any]:
    """``{"path", "sha256", "num_prompts"}``: the file's sha256 when there is a file, else that of its content."""
    if path is not None:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    else:
        canonical = json.dumps([[t, dict(m)] for t, m in zip(prompts.texts, prompts.metadata)], sort_keys=True)
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return {"path": None if path is None else str(path), "sha256": digest, "num_prompts": len(prompts)}


def scorer_record(entry: WeightedReward) -> dict[str, Any]:
    info = getattr(entry.reward, "info", None)
    return {"name": entry.name, "weight": entry.weight, "differentiable": bool(entry.reward.differentiable),
            "info": info() if callable(info) else {"type": type(entry.reward).__name__}}


def quantise(images: Tensor) -> Tensor:
    """[0, 1] float -> the 8-bit values a PNG stores, back in [0, 1]."""
    return (images.clamp(0, 1) * 255).round() / 255


def save_png(image: Tensor, file: Path, record: Mapping[str, Any] | None = None) -> None:
    """An 8-bit RGB PNG; ``record`` (prompt, seed, the run and checkpoint it came from) goes into its ``rtdmd``
    text chunk as JSON."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    info = None
    if record is not None:
        info = PngInfo()
        info.add_text("rtdmd", json.dumps(dict(record), default=str))
    Image.fromarray(pixels, "RGB").save(file, pnginfo=info)


def _check_images(images: Tensor, count: int, resolution: tuple[int, int] | None) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] != count or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"generate must return ({count}, 3, H, W) images, got {shape}")
    if resolution is not None and tuple(images.shape[-2:]) != tuple(resolution):
        raise ValueError(f"generate returned {tuple(images.shape[-2:])} images, the protocol says {tuple(resolution)}")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3 or math.isnan(lo):
        raise ValueError(f"generate must return images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return images.float()


def _summary_stats(values: Sequence[float], tags: Sequence[str | None]) -> dict[str, Any]:
    t = torch.tensor(values, dtype=torch.float64)
    stats: dict[str, Any] = {"mean": t.mean().item(), "std": t.std(unbiased=False).item(), "count": len(values)}
    if any(tag is not None for tag in tags):
        per_tag: dict[str, list[float]] = {}
        for v, tag in zip(values, tags):
            per_tag.setdefault(tag or "untagged", []).append(v)
        means = {tag: sum(v) / len(v) for tag, v in sorted(per_tag.items())}
        stats["per_tag"] = means
        stats["tag_mean"] = sum(means.values()) / len(means)
    return stats


def evaluate(generate: Generate, prompts: PromptSet, rewards: RewardSet | Sequence[WeightedReward],
             protocol: EvalProtocol, out_dir: str | Path, *, prompt_file: str | Path | None = None,
             batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate ``len(prompts) * len(protocol.seeds)`` images in batches, save, score, summarise (module
    docstring). Returns the summary (also written to ``summary.json``)."""
    entries = rewards.entries if isinstance(rewards, RewardSet) else list(rewards)
    if not entries:
        raise UserError("evaluation needs at least one reward")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(i, seed) for i in range(len(prompts)) for seed in protocol.seeds]
    values: dict[str, list[float]] = {e.name: [] for e in entries}
    tags: list[str | None] = []
    with (out / "scores.jsonl").open("w", encoding="utf-8") as lines:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            texts = [prompts.texts[i] for i, _ in batch]
            metadata = [prompts.metadata[i] for i, _ in batch]
            with torch.no_grad():
                images = _check_images(generate(texts, [s for _, s in batch]), len(batch), protocol.resolution)
                images = quantise(images)
                scores = {e.name: e.reward(images, texts, metadata).detach().float().cpu() for e in entries}
            for j, (i, seed) in enumerate(batch):
                file = f"images/{i:05d}_{seed}.png"
                save_png(images[j], out / file, {"prompt": texts[j], "seed": seed, **protocol.extra})
                tag = metadata[j].get("tag") if isinstance(metadata[j].get("tag"), str) else None
                tags.append(tag)
                row = {name: float(s[j]) for name, s in scores.items()}
                for name, v in row.items():
                    values[name].append(v)
                lines.write(json.dumps({"index": i, "prompt": texts[j], "seed": seed, "file": file, "tag": tag,
                                        "scores": row}) + "\n")
            if progress is not None:
                progress(min(start + batch_size, len(jobs)), len(jobs))
    summary = {
        "protocol": {"prompt_set": prompt_set_digest(prompts, prompt_file), "seeds": list(protocol.seeds),
                     "steps": protocol.steps, "cfg": protocol.cfg,
                     "resolution": None if protocol.resolution is None else list(protocol.resolution),
                     "images": len(jobs), "extra": dict(protocol.extra)},
        "scorers": [scorer_record(e) for e in entries],
        "scores": {name: _summary_stats(v, tags) for name, v in values.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return summary
