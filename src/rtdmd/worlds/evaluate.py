"""Evaluation of a backbone role on a world: sample every evaluation prompt, then the world's metrics."""

from __future__ import annotations

from rtdmd.sample import generate


def sample_role(parts, config, *, role: str = "generator", num: int | None = None, seed: int = 1234,
                teacher_steps: int = 50, split: str = "eval") -> dict:
    """``{prompt: decoded samples}``: the generator with its 4-step CPS sampler (eta of stage 1), or the
    teacher with its ODE (eta = 0) and ``teacher_steps`` steps."""
    backbone, prompts = parts.backbone, list(parts.world.prompts(split).texts)
    num = num or config.run.eval_samples
    if role == "teacher":
        sigmas, eta = backbone.teacher_sigmas(teacher_steps), 0.0
    else:
        sigmas, eta = backbone.generator_sigmas(config.distill.step_list), config.distill.eta
    x, _ = generate(backbone, prompts, num, seed, sigmas=sigmas, eta=eta, role=role)
    return {p: x[i * num:(i + 1) * num] for i, p in enumerate(prompts)}


def evaluate_role(parts, config, **kwargs) -> dict:
    """The world's metrics (``{"summary": ..., "prompts": ...}``) of ``role``'s samples."""
    samples = sample_role(parts, config, **kwargs)
    return parts.world.evaluate(samples, parts.rewards, config.beta, seed=kwargs.get("seed", 1234))
