"""Evaluation of a backbone role on a world: sample every evaluation prompt, then the world's metrics.

- :func:`sample_role` / :func:`evaluate_role` / :func:`evaluate_samples`: one role's samples (or metrics) on a
  prompt split.
- :func:`sample_timed`: the same samples in fixed batches, each batch timed (wall and CPU seconds): two roles
  sampled with the same ``num``, ``seed`` and ``prompts_per_batch`` see identical batches, so their per-batch
  times compare generation speed on the same work.
- :func:`per_seed` / :func:`standard_error`: a world's summary per seed, and standard errors over seeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from torch import Tensor

from rtdmd.app.sampling import generate


def role_sampler(backbone, config, role: str, teacher_steps: int = 50, stage: str = "distill") -> tuple[Tensor, float]:
    """Levels and eta of ``role``: the generator's 4-step CPS grid with the eta it was trained with in ``stage``
    (``"distill"`` or ``"align"``), or the teacher's ODE (eta = 0) with ``teacher_steps`` steps of its own
    scheduler."""
    if role == "teacher":
        return backbone.teacher_sigmas(teacher_steps), 0.0
    stage_cfg = getattr(config, stage)
    return backbone.generator_sigmas(stage_cfg.step_list), stage_cfg.eta


def sample_role(parts, config, *, role: str = "generator", num: int | None = None, seed: int = 1234,
                teacher_steps: int = 50, split: str = "eval") -> dict:
    """``{prompt: decoded samples}``: the generator with its 4-step CPS sampler (eta of stage 1), or the
    teacher with its ODE (eta = 0) and ``teacher_steps`` steps."""
    backbone, prompts = parts.backbone, list(parts.world.prompts(split).texts)
    num = num or config.run.eval_samples
    sigmas, eta = role_sampler(backbone, config, role, teacher_steps)
    x, _ = generate(backbone, prompts, num, seed, sigmas=sigmas, eta=eta, role=role)
    return {p: x[i * num:(i + 1) * num] for i, p in enumerate(prompts)}


def evaluate_samples(parts, config, samples: dict, seed: int = 1234) -> dict:
    """The world's metrics (``{"summary": ..., "prompts": ...}``) of ``{prompt: samples}``."""
    return parts.world.evaluate(samples, parts.rewards, config.beta, seed=seed)


def evaluate_role(parts, config, **kwargs) -> dict:
    """The world's metrics of ``role``'s samples (:func:`sample_role`, then :func:`evaluate_samples`)."""
    return evaluate_samples(parts, config, sample_role(parts, config, **kwargs), kwargs.get("seed", 1234))


@dataclass
class TimedSamples:
    """Samples per prompt ``(num, ...)`` and, per batch of ``batch`` samples, its wall and CPU seconds."""

    samples: dict[str, Tensor]
    batch: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)


def sample_timed(parts, config, *, role: str = "generator", num: int = 4, seed: int = 1234,
                 teacher_steps: int = 50, stage: str = "distill", split: str = "eval",
                 prompts_per_batch: int = 10) -> TimedSamples:
    """:func:`sample_role` in batches of ``prompts_per_batch`` prompts x ``num`` seeds (prompt-major, the same
    seeds as :func:`sample_role`), timing each batch from its first noise draw to its decoded images."""
    backbone, prompts = parts.backbone, list(parts.world.prompts(split).texts)
    sigmas, eta = role_sampler(backbone, config, role, teacher_steps, stage)
    prompts_per_batch = min(prompts_per_batch, len(prompts))
    # Text encoding is cached: keep it out of the timings (a guided teacher's empty prompt is encoded, once, in
    # its first batch; not every backbone can encode "", e.g. the analytic world's).
    backbone.encode(prompts)
    out = TimedSamples({}, prompts_per_batch * num)
    for first in range(0, len(prompts), prompts_per_batch):
        chunk = prompts[first:first + prompts_per_batch]
        wall, cpu = time.perf_counter(), time.process_time()
        # Seeds continue the prompt-major numbering of sample_seeds: seed + p * num + j for prompt p.
        x, _ = generate(backbone, chunk, num, seed + first * num, sigmas=sigmas, eta=eta, role=role)
        if len(chunk) == prompts_per_batch:  # a short last batch is not the same work
            out.seconds.append(time.perf_counter() - wall)
            out.cpu_seconds.append(time.process_time() - cpu)
        out.samples.update({p: x[i * num:(i + 1) * num] for i, p in enumerate(chunk)})
    return out


def per_seed(world, samples: dict[str, Tensor], rewards, beta: float) -> list[dict[str, float]]:
    """The world's summary of each seed separately: seed ``j`` (sample ``j`` of every prompt) is one independent
    replicate of the whole evaluation, so the spread of these summaries gives standard errors (also of paired
    differences between two roles sampled with the same seeds). Metrics that need several samples per prompt
    (within-prompt diversity) are NaN here."""
    num = min(len(x) for x in samples.values())
    return [world.evaluate({p: x[j:j + 1] for p, x in samples.items()}, rewards, beta)["summary"] for j in range(num)]


def standard_error(values) -> float:
    """``std(values) / sqrt(n)`` (unbiased variance); NaN for fewer than two finite values."""
    values = [float(v) for v in values]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return float("nan")
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
