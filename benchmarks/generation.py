"""Generation: the 4-step generator against the teacher's 28 steps with CFG, on the same backbone and batch.

The generator runs as after stage 2 (its frozen stage-1 adapter plus the stage-2 adapter, η = 0.9), and as the
merged export that stock diffusers runs (``rtdmd export``: adapters folded into the weights). The teacher runs its
ODE (η = 0) with CFG, 28 steps of one batched ``[uncond; cond]`` forward each. Each call makes the sampling loop of
``rtdmd.sample.sample`` (initial noise, model calls, CPS steps, per-sample step noise), without the VAE decode (the
same for both). Ratio of model calls: 28 x 2 (CFG) / 4 = 14.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.timing import interleaved, median
from rtdmd.sample import sample, seeded_generators

TEACHER_STEPS = 28
CALL_RATIO = TEACHER_STEPS * 2 / 4


@dataclass
class GenerationRow:
    batch: int
    generator: float  # seconds, median
    merged: float
    teacher: float
    generator_call: float  # one generator velocity call (batch rows)
    teacher_call: float  # one teacher CFG call (2 x batch rows in one forward)

    @property
    def ratio(self) -> float:
        return self.teacher / self.generator

    @property
    def ratio_merged(self) -> float:
        return self.teacher / self.merged

    @property
    def call_cost_ratio(self) -> float:
        """The speed ratio the isolated call costs allow: 28 teacher CFG calls over 4 generator calls."""
        return TEACHER_STEPS * self.teacher_call / (4 * self.generator_call)


def build_pair(folder: Path, size, root: Path):
    """The backbone with stage-2 adapters moved off zero, and a backbone built from its merged export (whose
    teacher role, adapters off, is the merged generator)."""
    from rtdmd.backbones import sd3
    from rtdmd.export import export_merged

    cfg = sd3.SD3Config(path=str(folder), height=size.image, width=size.image,
                        max_sequence_length=size.max_sequence_length, teacher_guidance=4.5, rank=size.lora_rank,
                        alpha=2.0 * size.lora_rank)
    backbone = sd3.build(cfg, device=torch.device("cpu"), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # stage-1 adapter, then the stage-2 one: both non-zero, as after training
        with torch.no_grad():
            for p in backbone.trainable("generator").values():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        if _ == 0:
            backbone.start_stage2()
    merged_dir = root / f"merged_{size.name}"
    if not merged_dir.exists():
        export_merged(backbone, merged_dir)
    import dataclasses

    merged = sd3.build(dataclasses.replace(cfg, path=str(merged_dir)), device=torch.device("cpu"), dtype=torch.float32)
    return backbone, merged


def measure(backbone, merged, prompts, batches, repeats: int) -> list[GenerationRow]:
    gen_sigmas = backbone.generator_sigmas((1000, 750, 500, 250))
    teacher_sigmas = backbone.teacher_sigmas(TEACHER_STEPS)
    rows = []
    for batch in batches:
        texts = [prompts[i % len(prompts)] for i in range(batch)]
        cond, cond_merged = backbone.encode(texts), merged.encode(texts)
        gens = lambda: seeded_generators(range(batch))
        x = backbone.noise(gens())
        sigma = torch.full((batch,), 0.5)
        with torch.no_grad():
            times = interleaved({
                "generator": lambda: sample(backbone, "generator", cond, gen_sigmas, 0.9, gens()),
                "merged": lambda: sample(merged, "teacher", cond_merged, gen_sigmas, 0.9, gens(), guidance=1.0),
                "teacher": lambda: sample(backbone, "teacher", cond, teacher_sigmas, 0.0, gens()),
            }, repeats)
            calls = interleaved({
                "generator": lambda: backbone.velocity("generator", x, sigma, cond),
                "teacher": lambda: backbone.velocity("teacher", x, sigma, cond),
            }, 4 * repeats)
        rows.append(GenerationRow(batch, median(times["generator"]), median(times["merged"]),
                                  median(times["teacher"]), median(calls["generator"]), median(calls["teacher"])))
    return rows
