"""The plumbing around a training loop, so that a stage file holds the method and little else.

A :class:`Session` joins the process group, takes ownership of the run directory (:mod:`rtdmd.train.lock`: rank 0
holds the lock for the whole job, every rank agrees that it got it), prepares the run directory (or finds the
checkpoint to resume), builds the components (world, backbone, rewards), creates the
:class:`~rtdmd.train.state.TrainState` (and restores it), and then serves the loop's visible bookkeeping lines:
:meth:`Session.log`, :meth:`Session.evaluate` (the EMA generator, through the caller's hook), :meth:`Session.save`
(a checkpoint), :meth:`Session.check_finite` and :meth:`Session.finish` (which records whether the run finished
and gives the run directory up).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from rtdmd.backbones.base import TRAINED_ROLES
from rtdmd.config import Config
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import load_checkpoint, save_checkpoint
from rtdmd.train.components import Components, build_components
from rtdmd.train.lock import RunLock
from rtdmd.train.logging import MetricsLogger, progress
from rtdmd.train.monitor import NonFiniteGuard
from rtdmd.train.parallel import Dist, configure_execution, distribute, init_distributed, reshard, shutdown
from rtdmd.train.rundir import check_run_dir_path, mark_finished, prepare_run_dir, stage_fingerprint
from rtdmd.train.signals import StopRequest
from rtdmd.train.state import TrainedRole, TrainState

Evaluate = Callable[[Components, int], Mapping[str, Any]]
"""``evaluate(components, step) -> metrics``: called with the EMA generator loaded into the backbone."""

T = TypeVar("T")


def every(step: int, period: int) -> bool:
    """True on the multiples of ``period`` (never when ``period`` is 0)."""
    return period > 0 and step % period == 0


def precompute_embeddings(backbone, world, run) -> None:
    """Encode the training and evaluation prompts once, up front (``run.embedding_cache``: through a disk cache),
    then free the text encoders when ``run.free_text_encoders``; the loops and the evaluation look rows up. A
    backbone without the hook (the analytic ``mlp``: no text encoder) encodes on demand."""
    hook = getattr(backbone, "precompute_embeddings", None)
    if hook is not None:
        hook([world.prompts(split).texts for split in ("train", "eval")], cache_dir=run.embedding_cache or None,
             free_text_encoders=run.free_text_encoders)


class Session:
    def __init__(self, config: Config, stage: str, run_dir: str | Path, *, resume: bool = False,
                 evaluate: Evaluate | None = None, info: Mapping[str, Any] | None = None):
        self.config, self.stage, self.run_dir, self.hook = config, stage, Path(run_dir), evaluate
        self.dist, self.device = init_distributed(config.run.device, config.run.parallel)
        self.lock = RunLock(self.run_dir) if self.dist.is_main else None
        self.saved_step: int | None = None
        try:
            on_every_rank(self.dist, self._own)  # first: rank 0's lock, so that a refusal reads the same everywhere
            self.checkpoint = on_every_rank(self.dist, lambda: prepare_run_dir(
                self.run_dir, config, stage, resume, self.dist.is_main, dict(info or {})))
            self.parts = build_components(config, self.device)
        except BaseException:
            self.release()
            raise
        self.backbone, self.world, self.rewards = self.parts.backbone, self.parts.world, self.parts.rewards
        precompute_embeddings(self.backbone, self.world, config.run)
        self.fingerprint = stage_fingerprint(config, stage)
        self.logger: MetricsLogger | None = None
        self.bar = None
        self.postfix: tuple[str, str] = ("", "")
        self.last: dict[str, Any] = {}

    def _own(self) -> None:
        """Lock the run directory (rank 0 only: it alone writes there)."""
        check_run_dir_path(self.run_dir)
        if self.lock is not None:
            self.lock.acquire()

    def release(self) -> None:
        """Give the run directory up (also done at interpreter exit, for runs that end in an error)."""
        if self.lock is not None:
            self.lock.release()

    @property
    def fresh(self) -> bool:
        """No checkpoint to resume: the run starts at step 0."""
        return self.checkpoint is None

    def train_state(self, stage_cfg, *, ema_every: int = 1,
                    frozen: Mapping[str, Mapping[str, Any]] | None = None) -> TrainState:
        """Distribute the trained roles over the ranks, build optimisers and EMA, restore the checkpoint when
        resuming, and open the metrics log. Call it once the roles hold their starting values."""
        distribute(self.backbone, TRAINED_ROLES, self.dist)
        configure_execution(self.backbone, self.config.run)
        guard = NonFiniteGuard(self.dist, self.config.run.nonfinite_patience)
        role = lambda name, optim, **ema: TrainedRole(name, self.backbone.trainable(name), optim,  # noqa: E731
                                                      self.dist, guard, **ema)
        state = TrainState(role("generator", stage_cfg.generator, ema_decay=stage_cfg.ema_decay, ema_every=ema_every),
                           role("fake", stage_cfg.fake), guard, frozen={k: dict(v) for k, v in (frozen or {}).items()})
        if self.checkpoint is not None:
            state.load_state_dict(*load_checkpoint(self.checkpoint, self.device))
            self.saved_step = state.step
            if self.dist.is_main:
                print(f"rtdmd: resuming from {self.checkpoint} (step {state.step})")
        run = self.config.run
        self.logger = MetricsLogger(self.run_dir, self.stage, enabled=self.dist.is_main,
                                    resume_step=None if self.fresh else state.step, tensorboard=run.tensorboard,
                                    wandb=run.wandb, wandb_project=run.wandb_project)
        return state

    def progress(self, state: TrainState, iterations: int, desc: str, postfix: tuple[str, str]) -> Iterator[int]:
        """The iterations still to run, under a progress bar showing ``postfix = (label, metric)``."""
        self.postfix = postfix
        self.bar = progress(range(state.step, iterations), desc, self.config.run.progress and self.dist.is_main,
                            initial=state.step, total=iterations)
        return iter(self.bar)

    def record(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log the main rank's ``metrics`` as they are (e.g. the initialisation's, before the first step)."""
        self.logger.log(step, metrics)

    def log(self, step: int, metrics: dict[str, Any], state: TrainState) -> None:
        """Average ``metrics`` over ranks (a collective) and log them on the main rank."""
        metrics = self.dist.mean_metrics({**metrics, "skipped_steps": state.guard.skipped})
        self.logger.log(step, metrics)
        self.last = metrics
        label, key = self.postfix
        if self.bar is not None and isinstance(metrics.get(key), float):
            self.bar.set_postfix({label: f"{metrics[key]:.4f}"})

    def evaluate(self, state: TrainState) -> dict[str, Any]:
        """The caller's hook with the EMA generator loaded; its scalars are logged as ``eval/*``. (With FSDP every
        forward is a collective, so every rank evaluates and the main rank logs.)"""
        result: dict[str, Any] = {}
        if self.hook is None:
            return result
        if self.dist.is_main or self.dist.sharded:
            with state.ema_applied():
                reshard(self.backbone)  # FSDP: forward with the EMA shards, not gathered training weights
                result = dict(self.hook(self.parts, state.step))
            reshard(self.backbone)  # ... and train on with the restored shards
        if self.dist.is_main:
            self.logger.log(state.step, {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        self.dist.barrier()
        return result

    def save(self, state: TrainState) -> None:
        """A checkpoint of ``state`` (gathered on every rank, written by the main rank; atomic). A step already
        saved (the scheduled checkpoint, then the non-finite guard's) is not written twice."""
        if self.saved_step == state.step:
            return
        self.saved_step = state.step
        reshard(self.backbone)  # so that the roles hold the FSDP shards, not a root's gathered copies
        tensors, info = state.state_dict()
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "checkpoints", state.step, tensors,
                            {**info, "stage": self.stage, "fingerprint": self.fingerprint,
                             "world_size": self.dist.world_size})

    def check_finite(self, state: TrainState) -> None:
        """After too many non-finite updates in a row: write a checkpoint and stop with one line."""
        state.guard.check(lambda: self.save(state))

    def finish(self, state: TrainState, stop: StopRequest) -> dict[str, Any]:
        """After the loop: the final evaluation (unless a signal stopped the run, which is reported), close the
        log, record in ``run.json`` whether the run finished, and return on every rank only once the main rank
        has written the last checkpoint; then give the run directory up."""
        name = signal.Signals(stop.signal).name if stop else None
        if stop:
            self.logger.log(state.step, {"stopped_by_signal": name})
            if self.dist.is_main:
                print(f"rtdmd: stopped by {name} after step {state.step}; checkpoint written, continue with --resume",
                      flush=True)
            self.last = {**self.last, "stopped_by_signal": int(stop.signal)}
        elif self.hook is not None:
            self.last = {**self.last, **self.evaluate(state)}
        self.logger.close()
        if self.dist.is_main:
            try:
                mark_finished(self.run_dir, not stop, state.step, name)
            except OSError as err:
                raise UserError(f"cannot update {self.run_dir / 'run.json'} ({err.strerror}): the checkpoint of step "
                                f"{state.step} is written; fix the disk, then run again with --resume") from None
        self.dist.barrier()
        self.release()
        return self.last


def on_every_rank(dist: Dist, action: Callable[[], T]) -> T:
    """``action()`` on every rank; if it raises a :class:`UserError` on some rank, every rank stops with one line
    (the failing rank with its own, the others pointing to it) instead of waiting in the next collective."""
    error = None
    try:
        result = action()
    except UserError as err:
        error = err
    failed = float(error is not None)
    if dist.active:
        failed = dist.all_reduce_sum(torch.tensor([failed], device=dist.device)).item()
        if failed:
            shutdown()  # every rank stops here: leave the group cleanly (no abort at exit)
    if error is not None:
        raise error
    if failed:
        raise UserError("another rank could not prepare the run directory (its error line says why)")
    return result
