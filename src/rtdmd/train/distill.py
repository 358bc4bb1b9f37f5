"""Stage 1, AC-DMD (spec section 4): the generator learns the teacher's distribution in 4 steps.

One iteration: roll the generator out to a random stop ``k`` (level ``s``), renoise to ``t > s`` and update the
fake score on the ambient target (+ consistency); every ``fake_update_ratio`` iterations, a fresh rollout
updates the generator with the sub-interval DMD gradient, then the EMA.
"""

from __future__ import annotations

import time
from pathlib import Path


from rtdmd.backbones.base import TRAINED_ROLES
from rtdmd.config import Config
from rtdmd.train import preflight
from rtdmd.train import state as train_state
from rtdmd.train import steps
from rtdmd.train.optim import clip_and_step
from rtdmd.train.loop import start_training
from rtdmd.train.parallel import distribute, init_distributed
from rtdmd.train.runs import build_components, prepare_run_dir, stage_fingerprint
from rtdmd.train.signals import stop_on_signals
from rtdmd.rng import Streams

STAGE = "distill"


def run(config: Config, run_dir: str | Path, *, resume: bool = False, evaluate=None) -> dict:
    """Train stage 1 into ``run_dir``; returns the last logged metrics. ``evaluate(components, step)`` (optional)
    is called on the main rank every ``run.eval_every`` steps and at the end, with the EMA generator loaded."""
    cfg = config.distill
    preflight.check_distill(config)
    dist, device = init_distributed(config.run.device, config.run.parallel)
    run_dir = Path(run_dir)
    checkpoint = prepare_run_dir(run_dir, config, STAGE, resume, dist.is_main)
    parts = build_components(config, device)
    backbone, prompts = parts.backbone, parts.world.prompts("train")
    sigmas = backbone.generator_sigmas(cfg.step_list)
    n_steps = len(sigmas) - 1

    # Roles (replicated or sharded over the ranks), optimisers, EMA.
    init_metrics = {}
    if checkpoint is None:
        t0 = time.perf_counter()
        init_metrics = backbone.init_students() or {}
        init_metrics["init_seconds"] = time.perf_counter() - t0
    distribute(backbone, TRAINED_ROLES, dist)
    t = start_training(config, cfg, STAGE, "stage 1 (AC-DMD)", ("fake", "fake_loss"), run_dir, checkpoint, parts, dist,
                       device, evaluate)
    gen_params, fake_params, optimizers, ema, guard, book = (t.gen_params, t.fake_params, t.optimizers, t.ema,
                                                             t.guard, t.book)
    if init_metrics:
        t.logger.log(0, init_metrics)
        if evaluate is not None:  # the untrained 4-step generator: the starting point of every curve
            book.evaluate_ema(0)

    streams = Streams(config.run.seed)
    local = list(dist.shard(cfg.batch_size))
    cond_all = backbone.encode(list(prompts.texts))
    fingerprint = stage_fingerprint(config, STAGE)

    def save(step: int) -> None:
        tensors = train_state.training_tensors(backbone, ema, optimizers)
        train_state.write(run_dir, step, tensors, {"stage": STAGE, "fingerprint": fingerprint,
                                                   "skipped_steps": guard.skipped, "world_size": dist.world_size},
                          dist.is_main)

    book.save = save

    def batch(step: int, purpose: str):
        """Prompts, conditioning, initial noise and step noise of this rank's rows."""
        ids = (streams.rand(("prompt", purpose, step), local) * len(prompts)).long().clamp_max(len(prompts) - 1)
        draw = steps.Draw(streams, step, local, tuple(backbone.sample_shape), device)
        cond = {k: v[ids.to(v.device)] for k, v in cond_all.items()}
        x = draw.randn("x_init", purpose)
        return cond, draw, x, (lambda i: draw.randn("step_noise", purpose, i))

    with stop_on_signals() as stop:
        for it in book.bar:
            metrics: dict = {}
            # Fake-score update (every iteration) on a random-stop rollout (4.1-4.5).
            k = streams.randint(("stop", "fake", it), n_steps + 1, 1) if cfg.method == "acdmd" else n_steps
            cond, draw, x, noise = batch(it, "fake")
            x_s = steps.cps_rollout(backbone, "generator", cond, x, sigmas, cfg.eta, noise, k)
            loss, m = steps.fake_score_loss(backbone, cond, x_s, float(sigmas[k]), draw, eta=cfg.eta,
                                            weighting=cfg.fake_weighting, gamma=cfg.consistency_gamma,
                                            estimator=cfg.consistency_estimator, delta_max=cfg.consistency_delta_max,
                                            offset=cfg.renoise_offset, clamp=cfg.tau_clamp)
            metrics.update(m, stop_k=k)
            if guard.backward(loss.mean(), "fake loss"):
                dist.sync_grads(fake_params.values())
                metrics["fake_grad_norm"] = clip_and_step(optimizers["fake"], fake_params, cfg.fake.grad_clip)
            else:
                optimizers["fake"].zero_grad(set_to_none=True)

            # Generator update (4.6), then the EMA.
            if (it + 1) % cfg.fake_update_ratio == 0:
                k = streams.randint(("stop", "generator", it), n_steps + 1, 1) if cfg.method == "acdmd" else n_steps
                cond, draw, x, noise = batch(it, "generator")
                x_s = steps.cps_rollout(backbone, "generator", cond, x, sigmas, cfg.eta, noise, k, grad_last=True)
                loss, m = steps.generator_dmd_loss(backbone, cond, x_s, float(sigmas[k]), draw, eta=cfg.eta,
                                                   offset=cfg.renoise_offset, clamp=cfg.tau_clamp)
                metrics.update(m, generator_loss=loss.mean().item(), generator_stop_k=k)
                if guard.backward(loss.mean(), "generator loss"):
                    dist.sync_grads(gen_params.values())
                    metrics["generator_grad_norm"] = clip_and_step(optimizers["generator"], gen_params, cfg.generator.grad_clip)
                    ema.update(gen_params)
                else:
                    optimizers["generator"].zero_grad(set_to_none=True)

            if book.end_of_iteration(it + 1, metrics, stop):
                break
    return book.finish(stop)

