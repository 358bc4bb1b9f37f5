"""What both training loops do after every iteration: log, evaluate the EMA generator, checkpoint, stop on a
signal or on repeated non-finite updates, and, after the last iteration, a final evaluation."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from rtdmd.train.parallel import reshard


@dataclass
class Bookkeeping:
    iterations: int
    log_every: int
    checkpoint_every: int
    eval_every: int
    save: Callable[[int], None]  # write the checkpoint of a step
    logger: object
    dist: object
    guard: object  # NonFiniteGuard
    bar: object  # the progress bar
    postfix: tuple[str, str]  # (label, metric key) shown on the bar
    evaluate: Callable | None = None  # evaluate(components, step) -> dict, with the EMA generator loaded
    parts: object = None
    gen_params: dict = field(default_factory=dict)
    ema: object = None
    last: dict = field(default_factory=dict)

    def end_of_iteration(self, step: int, metrics: dict, stop) -> bool:
        """Log, evaluate, checkpoint; True when the loop must stop after this iteration (a signal reached some
        rank: every rank stops after the same iteration). Raises after too many non-finite updates in a row,
        once the checkpoint is written."""
        stopping = stop.agreed(self.dist)
        if step % self.log_every == 0 or step == self.iterations or stopping:
            metrics["skipped_steps"] = self.guard.skipped
            metrics = self.dist.mean_metrics(metrics)
            self.logger.log(step, metrics)
            self.last = metrics
            label, key = self.postfix
            if isinstance(metrics.get(key), float):
                self.bar.set_postfix({label: f"{metrics[key]:.4f}"})
        if self.evaluate is not None and self.eval_every and step % self.eval_every == 0 and step != self.iterations:
            self.evaluate_ema(step)
        if (self.checkpoint_every and step % self.checkpoint_every == 0) or step == self.iterations or stopping:
            self.save(step)
        if stopping:
            name = signal.Signals(stop.signal).name
            self.logger.log(step, {"stopped_by_signal": name})
            if self.dist.is_main:
                print(f"rtdmd: stopped by {name} after step {step}; checkpoint written, continue with --resume",
                      flush=True)
            self.last = {**self.last, "stopped_by_signal": int(stop.signal)}
            return True
        self.guard.check(lambda: self.save(step))
        return False

    def evaluate_ema(self, step: int) -> dict:
        """Run ``evaluate(parts, step)`` with the EMA generator loaded and log its scalars. (With FSDP every
        forward is a collective, so every rank evaluates and the main rank logs.)"""
        result = {}
        if self.dist.is_main or self.dist.sharded:
            with self.ema.applied(self.gen_params):
                reshard(self.parts.backbone)  # FSDP: forward with the EMA shards, not gathered training weights
                result = self.evaluate(self.parts, step)
            reshard(self.parts.backbone)  # ... and train on with the restored shards
        if self.dist.is_main:
            self.logger.log(step, {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        self.dist.barrier()
        return result

    def finish(self, stop) -> dict:
        """After the loop: the final evaluation (unless stopped by a signal), close the log, and return on every
        rank only once rank 0 has written the last checkpoint."""
        if self.evaluate is not None and not stop:
            self.last = {**self.last, **self.evaluate_ema(self.iterations)}
        self.logger.close()
        self.dist.barrier()
        return self.last


@dataclass
class Training:
    """The state both loops build before their first iteration."""

    gen_params: dict
    fake_params: dict
    optimizers: dict
    ema: object
    guard: object
    start: int  # the first iteration to run (0, or the step of the checkpoint resumed from)
    saved: dict  # the JSON state of that checkpoint ({} for a fresh start)
    logger: object
    book: Bookkeeping


def start_training(config, stage_cfg, stage: str, desc: str, postfix: tuple[str, str], run_dir, checkpoint, parts, dist,
          device, evaluate) -> Training:
    """Optimisers, EMA and non-finite guard of the trained roles; the checkpoint's state when resuming; the
    metrics log, progress bar and :class:`Bookkeeping` (whose ``save`` the caller sets)."""
    from rtdmd.train import state as train_state
    from rtdmd.train.checkpoint import load_checkpoint
    from rtdmd.train.ema import EMA
    from rtdmd.train.logging import MetricsLogger, progress
    from rtdmd.train.monitor import NonFiniteGuard
    from rtdmd.train.optim import build_optimizer

    backbone = parts.backbone
    gen_params, fake_params = backbone.trainable("generator"), backbone.trainable("fake")
    optimizers = {"generator": build_optimizer(gen_params, stage_cfg.generator),
                  "fake": build_optimizer(fake_params, stage_cfg.fake)}
    for optimizer in optimizers.values():  # start from clean gradients, whatever initialisation left behind
        optimizer.zero_grad(set_to_none=True)
    ema = EMA(gen_params, stage_cfg.ema_decay)
    guard = NonFiniteGuard(dist, config.run.nonfinite_patience)
    start, saved = 0, {}
    if checkpoint is not None:
        tensors, saved = load_checkpoint(checkpoint, device)
        train_state.restore_training(tensors, backbone, ema, optimizers)
        start, guard.skipped = int(saved["step"]), int(saved.get("skipped_steps", 0))
        if dist.is_main:
            print(f"rtdmd: resuming from {checkpoint} (step {start})")
    logger = MetricsLogger(run_dir, stage, enabled=dist.is_main, resume_step=start if checkpoint else None,
                           tensorboard=config.run.tensorboard, wandb=config.run.wandb,
                           wandb_project=config.run.wandb_project)
    bar = progress(range(start, stage_cfg.iterations), desc, config.run.progress and dist.is_main,
                   initial=start, total=stage_cfg.iterations)
    book = Bookkeeping(stage_cfg.iterations, stage_cfg.log_every, stage_cfg.checkpoint_every, config.run.eval_every,
                       None, logger, dist, guard, bar, postfix, evaluate, parts, gen_params, ema)
    return Training(gen_params, fake_params, optimizers, ema, guard, start, saved, logger, book)
