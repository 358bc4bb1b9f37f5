"""Generation: the 4-step generator against the teacher's 28 steps with CFG, on the same backbone and batch.

The generator runs as after stage 2 (its frozen stage-1 adapter plus the stage-2 adapter, η = 0.9) with live
adapters, as evaluation during training does, and folded into the weights, as ``rtdmd generate`` runs it (the
arithmetic of the merged export in stock diffusers). The teacher runs its
ODE (η = 0) with CFG, 28 steps of one batched ``[uncond; cond]`` forward each. Each call makes the sampling loop of
``rtdmd.app.sampling.sample`` (initial noise, model calls, CPS steps, per-sample step noise), without the VAE decode (the
same for both). Ratio of model calls: 28 x 2 (CFG) / 4 = 14.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.timing import interleaved, median
from rtdmd.app.sampling import sample, seeded_generators

TEACHER_STEPS = 28
CALL_RATIO = TEACHER_STEPS * 2 / 4


@dataclass
class GenerationRow:
    batch: int
    generator: float  # seconds, median
    folded: float  # the generator folded into the weights (rtdmd generate)
    teacher: float
    generator_call: float  # one generator velocity call (batch rows)
    teacher_call: float  # one teacher CFG call (2 x batch rows in one forward)

    @property
    def ratio(self) -> float:
        return self.teacher / self.generator

    @property
    def ratio_folded(self) -> float:
        return self.teacher / self.folded

    @property
    def call_cost_ratio(self) -> float:
        """The speed ratio the isolated call costs allow: 28 teacher CFG calls over 4 generator calls."""
        return TEACHER_STEPS * self.teacher_call / (4 * self.generator_call)


def trained(folder: Path, size):
    """The SD3 backbone of ``size`` with its stage-1 and stage-2 generator adapters moved off zero (fixed seed: two
    calls give the same weights)."""
    from rtdmd.backbones import sd3

    cfg = sd3.SD3Config(path=str(folder), height=size.image, width=size.image,
                        max_sequence_length=size.max_sequence_length, teacher_guidance=4.5, rank=size.lora_rank,
                        alpha=2.0 * size.lora_rank)
    backbone = sd3.build(cfg, device=torch.device("cpu"), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for stage in (1, 2):  # both adapters non-zero, as after training
        if stage == 2:
            backbone.start_stage2()
        with torch.no_grad():
            for p in backbone.trainable("generator").values():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    return backbone


def build_pair(folder: Path, size):
    """The trained backbone with live adapters, and the same generator folded into the weights of a second copy
    (what ``rtdmd generate`` runs, and the arithmetic of the merged export in stock diffusers)."""
    backbone, folded = trained(folder, size), trained(folder, size)
    folded.fold("generator")
    return backbone, folded


def measure(backbone, folded, prompts, batches, repeats: int) -> list[GenerationRow]:
    gen_sigmas = backbone.generator_sigmas((1000, 750, 500, 250))
    teacher_sigmas = backbone.teacher_sigmas(TEACHER_STEPS)
    rows = []
    for batch in batches:
        texts = [prompts[i % len(prompts)] for i in range(batch)]
        cond = backbone.encode(texts)
        gens = lambda: seeded_generators(range(batch))
        x = backbone.noise(gens())
        sigma = torch.full((batch,), 0.5)
        with torch.no_grad():
            times = interleaved({
                "generator": lambda: sample(backbone, "generator", cond, gen_sigmas, 0.9, gens()),
                "folded": lambda: sample(folded, "generator", cond, gen_sigmas, 0.9, gens()),
                "teacher": lambda: sample(backbone, "teacher", cond, teacher_sigmas, 0.0, gens()),
            }, repeats)
            calls = interleaved({
                "generator": lambda: backbone.role("generator")(x, sigma, cond),
                "teacher": lambda: backbone.role("teacher")(x, sigma, cond),
            }, 4 * repeats)
        rows.append(GenerationRow(batch, median(times["generator"]), median(times["folded"]),
                                  median(times["teacher"]), median(calls["generator"]), median(calls["teacher"])))
    return rows
