"""Generation to files: prompts -> PNG images + ``metadata.jsonl`` (prompt, seed, file, steps, eta).

Image ``k`` is drawn from its own CPU generator seeded with ``seeds[k]`` (initial noise, then one draw per
stochastic step), as a stock diffusers pipeline with a list of generators and :class:`rtdmd.scheduler.CPSScheduler`
does, so an exported generator gives the same images in both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rtdmd.backbones.base import Backbone
from rtdmd.sample import sample, seeded_generators


def to_uint8(images: Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, H, W, 3)`` uint8, rounded as diffusers' ``numpy_to_pil``."""
    array = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return (array * 255).round().astype("uint8")


def generate(backbone: Backbone, prompts: Sequence[str], seeds: Sequence[int], out_dir: str | Path, *,
             role: str = "generator", sigmas: Tensor, eta: float, batch_size: int = 8) -> list[dict]:
    """Sample one image per ``(prompts[k], seeds[k])`` with ``role`` down ``sigmas`` and write
    ``out_dir/{k:05d}.png`` and ``out_dir/metadata.jsonl``. Returns the metadata rows."""
    from PIL import Image

    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, len(prompts), batch_size):
        batch_prompts = list(prompts[start:start + batch_size])
        batch_seeds = list(seeds[start:start + batch_size])
        x = sample(backbone, role, backbone.encode(batch_prompts), sigmas, eta, seeded_generators(batch_seeds))
        with torch.no_grad():
            pixels = to_uint8(backbone.decode(x))
        for k, (prompt, seed, image) in enumerate(zip(batch_prompts, batch_seeds, pixels)):
            name = f"{start + k:05d}.png"
            Image.fromarray(image).save(out / name)
            rows.append({"prompt": prompt, "seed": int(seed), "file": name, "steps": len(sigmas) - 1,
                         "eta": float(eta), "role": role})
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows
