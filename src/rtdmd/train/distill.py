"""Stage 1, AC-DMD (spec section 4): the generator learns the teacher's distribution in 4 steps.

One iteration: roll the generator out to a random stop ``k`` (level ``s = sigma_k``, 4.1), renoise to ``t > s``
and update the fake score on the ambient target plus the consistency regulariser (4.2-4.5); every
``fake_update_ratio`` iterations a fresh rollout, with gradient through its last step, updates the generator with
the sub-interval DMD gradient (4.6), then the EMA. The losses are :mod:`rtdmd.train.objectives`, the sampler
:func:`rtdmd.functional.samplers.rollout`; the run directory, checkpoints and logs are the session's.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rtdmd.config import Config
from rtdmd.functional.samplers import rollout
from rtdmd.rng import Draw, Streams
from rtdmd.train import objectives, preflight
from rtdmd.train.session import Evaluate, Session, every
from rtdmd.train.signals import stop_on_signals

STAGE = "distill"


def run(config: Config, run_dir: str | Path, *, resume: bool = False, evaluate: Evaluate | None = None) -> dict:
    """Train stage 1 into ``run_dir``; returns the last logged metrics. ``evaluate(components, step)`` (optional)
    runs on the EMA generator every ``run.eval_every`` steps and at the end."""
    cfg = config.distill
    preflight.check_distill(config)
    session = Session(config, STAGE, run_dir, resume=resume, evaluate=evaluate)
    backbone, dist = session.backbone, session.dist
    prompts = session.world.prompts("train")
    sigmas = backbone.generator_sigmas(cfg.step_list)
    n_steps = len(sigmas) - 1
    objectives.check_renoise_room(sigmas, cfg.renoise_offset)
    objective = objectives.stage1(cfg)
    teacher, generator, fake = backbone.role("teacher"), backbone.role("generator"), backbone.role("fake")

    # Both students start as the teacher's function (LoRA: B = 0; the analytic world: a regression).
    if session.fresh:
        t0 = time.perf_counter()
        init = {**(backbone.init_students() or {}), "init_seconds": time.perf_counter() - t0}
    state = session.train_state(cfg)
    if session.fresh:
        session.record(0, init)
        session.evaluate(state)  # the untrained 4-step generator: the start of every curve

    streams = Streams(config.run.seed)
    rows = list(dist.shard(cfg.batch_size))  # this rank's global sample indices

    def batch(it: int, purpose: str):
        """This rank's prompts, per-sample draws, initial noise and step noise for one rollout."""
        ids = (streams.rand(("prompt", purpose, it), rows) * len(prompts)).long().clamp_max(len(prompts) - 1)
        cond = backbone.encode([prompts.texts[i] for i in ids.tolist()])  # rows of the session's one encode
        draw = Draw(streams, it, rows, tuple(backbone.sample_shape), session.device)
        return cond, draw, draw.randn("x_init", purpose), lambda i: draw.randn("step_noise", purpose, i)

    def random_stop(it: int, purpose: str) -> int:
        """k ~ U{1..4}, one per rollout, the same on every rank (4.1); plain DMD always rolls out fully."""
        return streams.randint(("stop", purpose, it), n_steps + 1, 1) if cfg.method == "acdmd" else n_steps

    with stop_on_signals() as stop:
        for it in session.progress(state, cfg.iterations, "stage 1 (AC-DMD)", ("fake", "fake_loss")):
            metrics: dict = {}
            # Fake-score update on a random-stop rollout (4.1-4.5).
            k = random_stop(it, "fake")
            cond, draw, x, noise = batch(it, "fake")
            with torch.no_grad():
                x_s = rollout(generator, x, sigmas, cfg.eta, noise, cond, stop=k)
            loss, m = objective.fake(fake, cond, x_s, float(sigmas[k]), draw)
            metrics.update(m, stop_k=k, **state.fake.update(loss.mean()))

            # Generator update on a fresh rollout, gradient through its last step only (4.6); then the EMA.
            if (it + 1) % cfg.fake_update_ratio == 0:
                k = random_stop(it, "generator")
                cond, draw, x, noise = batch(it, "generator")
                x_s = rollout(generator, x, sigmas, cfg.eta, noise, cond, stop=k, grad_from=k - 1)
                loss, m = objective.generator(teacher, fake, cond, x_s, float(sigmas[k]), draw)
                metrics.update(m, generator_loss=loss.mean().item(), generator_stop_k=k,
                               **state.generator.update(loss.mean()))

            # Log, evaluate, checkpoint.
            state.step = step = it + 1
            stopping = stop.agreed(dist)
            last = step == cfg.iterations or stopping
            if every(step, cfg.log_every) or last:
                session.log(step, metrics, state)
            if every(step, config.run.eval_every) and step != cfg.iterations:
                session.evaluate(state)
            if every(step, cfg.checkpoint_every) or last:
                session.save(state)
            if stopping:
                break
            session.check_finite(state)
    return session.finish(state, stop)
