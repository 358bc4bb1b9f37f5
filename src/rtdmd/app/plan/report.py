"""What ``rtdmd plan`` reports: each stage's per-GPU peak by term on the requested number of GPUs, whether it fits
(and with how much headroom), the fewest GPUs it fits on, the FLOPs of an iteration, the authors' layout computed
the same way, and, when it does not fit, the terms in the way and what reduces each."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from rtdmd.app.plan.planner import STAGES, Planner, StagePlan
from rtdmd.errors import UserError

GiB = 2**30
# Memory the planned tensors cannot use: the CUDA context and the caching allocator's rounding and fragmentation.
RESERVE = 0.05
UNITS = {"gib": 2**30, "gb": 10**9, "mib": 2**20, "mb": 10**6, "tib": 2**40, "tb": 10**12}
REMEDIES = {
    "activations": "run.activation_checkpointing: true; a smaller per-GPU batch (more GPUs) or align.micro_batch",
    "frozen base": "run.parallel: fsdp (shards the transformer over the GPUs)",
    "text encoders": "run.free_text_encoders: true (with run.embedding_cache to encode once across runs)",
    "rewards": "run.reward_device (another device), or the rewards' dtype: bf16",
    "optimizer": "run.parallel: fsdp (shards the optimizer state)",
    "gradients": "run.parallel: fsdp",
    "FSDP gathered": "more GPUs do not shrink it: it is two transformer blocks and the root module",
    "VAE": "(small; replicated on every GPU)",
}
STAGE_NAMES = {"distill": "stage 1 (distill)", "align": "stage 2 (align)"}


def parse_memory(text: str) -> int:
    """``"80GiB"`` -> bytes (GiB, GB = 10^9, MiB, MB, TiB, TB; a plain number is GiB)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = (match.group(2) if match else "").lower() or "gib"
    if not match or unit not in UNITS:
        raise UserError(f"--gpu-memory {text!r} is not a size: write e.g. 80GiB, 40GB or 24GiB")
    return int(float(match.group(1)) * UNITS[unit])


def usable(memory: int) -> float:
    return memory * (1 - RESERVE)


def fits(plan: StagePlan, memory: int) -> bool:
    return plan.needed <= usable(memory)


def candidate_gpus(planner: Planner, stage: str, limit: int = 512) -> list[int]:
    """GPU counts a stage can run on: the divisors of its global batch (each rank takes an equal share)."""
    cfg = planner.config
    total = cfg.distill.batch_size if stage == "distill" else cfg.align.samples_per_iteration
    return [n for n in range(1, min(total, limit) + 1) if total % n == 0]


def fewest_gpus(plan_at: Callable[[int], StagePlan], counts: list[int], memory: int) -> StagePlan | None:
    """The plan on the fewest of ``counts`` GPUs that fits ``memory`` (a binary search: the per-GPU peak does
    not grow with the number of GPUs), or None when even the most do not fit."""
    lo, hi, best = 0, len(counts) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        plan = plan_at(counts[mid])
        if fits(plan, memory):
            best, hi = plan, mid - 1
        else:
            lo = mid + 1
    return best


def authors_layout(plan: StagePlan, gpus: int, fsdp: bool) -> dict[str, int]:
    """The public code's layout computed the same way: four whole transformers (generator, fake score, teacher,
    EMA; spec 9.3) and bf16 LoRA weights, gradients and Adam moments of both trained roles (spec 9.1), sharded like
    ours; activations, encoders, VAE and rewards as in our plan (the same passes, checkpointed and under autocast
    as theirs are)."""
    share = (lambda b: math.ceil(b / gpus)) if fsdp and gpus > 1 else (lambda b: b)
    terms = dict(plan.terms)
    terms.update({"frozen base": share(4 * plan.transformer_bytes), "adapters": share(2 * 2 * plan.lora_params),
                  "gradients": share(2 * plan.lora_params), "optimizer": share(2 * 2 * 2 * plan.lora_params),
                  "EMA": 0})
    return terms


@dataclass
class StageReport:
    plan: StagePlan  # on the requested GPUs
    fewest: StagePlan | None
    memory: int
    fsdp: bool

    @property
    def authors(self) -> int:
        return sum(authors_layout(self.plan, self.plan.gpus, self.fsdp).values())

    def in_the_way(self) -> list[str]:
        """The largest terms (those above a tenth of the peak), with what reduces each."""
        peak = self.plan.peak
        big = sorted(((v, k) for k, v in self.plan.terms.items() if v > 0.1 * peak and k in REMEDIES), reverse=True)
        return [f"{k} {v / GiB:.1f} GiB: {REMEDIES[k]}" for v, k in big]

    def render(self) -> str:
        plan, cfg = self.plan, self.memory
        lines = [f"{STAGE_NAMES[plan.stage]}: {plan.local_batch} samples per GPU per iteration"
                 + (" and round" if plan.stage == "align" else "")
                 + (f", micro-batches of {plan.micro_batch}" if plan.micro_batch != plan.local_batch else "")
                 + f"; activation checkpointing {'on' if plan.checkpointing else 'off'}", "",
                 "| term | GiB per GPU |", "|---|---|"]
        lines += [f"| {k} | {v / GiB:.2f} |" for k, v in plan.terms.items() if v]
        lines += [f"| **peak** | **{plan.peak / GiB:.2f}** |", ""]
        headroom = 1 - plan.needed / cfg
        lines.append(f"start-up (models loaded, prompts encoded): {plan.startup / GiB:.2f} GiB; needs "
                     f"{plan.needed / GiB:.2f} of {cfg / GiB:.0f} GiB per GPU: "
                     + ("fits" if fits(plan, cfg) else "does NOT fit") + f", headroom {headroom:.0%}")
        lines.append(f"FLOPs per iteration: {plan.flops / 1e12:.1f} TFLOP per GPU, {plan.flops * plan.gpus / 1e15:.2f} "
                     f"PFLOP on {plan.gpus} GPU(s)" + (f" (mean iteration: {plan.mean_flops / 1e12:.1f} TFLOP per GPU)"
                                                      if plan.mean_flops != plan.flops else ""))
        if self.fewest is None:
            lines.append("fewest GPUs: none of the GPU counts that divide the batch fits")
        else:
            lines.append(f"fewest GPUs: {self.fewest.gpus} (peak {self.fewest.needed / GiB:.1f} GiB per GPU with "
                         f"{self.fewest.local_batch} samples each)")
        lines.append(f"authors' layout (four transformers, bf16 LoRA states): {self.authors / GiB:.1f} GiB per GPU")
        if not fits(plan, cfg) or headroom < 0.2:
            lines.append("in the way: " + "; ".join(self.in_the_way()))
        if plan.startup > plan.peak:
            lines.append("the start-up peak decides: encode elsewhere into run.embedding_cache first, or free the "
                         "text encoders (run.free_text_encoders)")
        lines += [f"note: {n}" for n in plan.notes]
        host = {k: v for k, v in plan.host.items() if v}
        if host:
            lines.append("host memory per process: " + ", ".join(
                f"{k} {v / 2**20:.1f} MiB" + (" (each prompt, every prompt without run.embedding_cache)"
                                             if k == "prompt row" else "") for k, v in host.items()))
        return "\n".join(lines)


def report(planner: Planner, gpus: int, memory: int, stages=STAGES, search: bool = True) -> list[StageReport]:
    fsdp = planner.config.run.parallel == "fsdp"
    out = []
    for stage in stages:
        plan = planner.plan(stage, gpus)
        fewest = fewest_gpus(lambda n, stage=stage: planner.plan(stage, n), candidate_gpus(planner, stage), memory) \
            if search else None
        out.append(StageReport(plan, fewest, memory, fsdp))
    return out
