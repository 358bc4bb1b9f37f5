"""The training state: parts that update, save and load themselves.

- :class:`TrainedRole`: one trained role (generator or fake score): its tensors, AdamW, gradient clipping, the
  non-finite guard and, for the generator, the EMA. ``update(loss)`` is the one place where a loss becomes an
  optimiser step (finite check on every rank -> backward -> gradient sync -> clip -> step -> EMA);
  ``accumulate`` + ``step`` split it for gradient accumulation over several backward passes.
- :class:`TrainState`: the step, both roles, the frozen stage-1 tensors of a stage-2 run and the counters, as
  one ``(tensors, json)`` pair for a checkpoint.

Tensors of a checkpoint (safetensors, always full tensors: FSDP shards are gathered first, so a checkpoint does
not depend on the number of processes that wrote it): ``generator/*``, ``fake/*`` (trainable tensors), ``ema/*``
(generator EMA), ``optim_generator/*``, ``optim_fake/*`` (AdamW moments and step counts) and, in stage 2,
``stage1_generator/*``, ``stage1_fake/*`` (the frozen stage-1 result, so that a stage-2 run is self-contained).
JSON: the step, ``updates`` (generator optimiser steps, which schedule the EMA) and ``skipped_steps``.

"Every RNG stream of every rank" is in it by construction, not by saving generator states: every random number
of training is a pure function of ``(run.seed, purpose, step, global sample index)`` (:mod:`rtdmd.rng`), so the
step number alone restores what every rank draws next, on any number of processes; the data position is the
step too. Stage 2 keeps no running statistics (advantages are normalised within each step's global batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from rtdmd.config import OptimConfig
from rtdmd.train.ema import EMA
from rtdmd.train.monitor import NonFiniteGuard
from rtdmd.train.optim import build_optimizer, clip_and_step, load_optimizer_tensors, optimizer_tensors
from rtdmd.train.parallel import Dist, full_tensor, load_into


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def unprefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


class TrainedRole:
    """One trained role. ``params`` are its trainable tensors as the backbone holds them (FSDP shards after
    ``distribute``); ``ema_decay`` adds an EMA updated every ``ema_every`` optimiser steps."""

    def __init__(self, name: str, params: Mapping[str, nn.Parameter], optim: OptimConfig, dist: Dist,
                 guard: NonFiniteGuard, ema_decay: float | None = None, ema_every: int = 1):
        self.name, self.params, self.dist, self.guard = name, dict(params), dist, guard
        self.grad_clip = optim.grad_clip
        self.optimizer = build_optimizer(self.params, optim)
        self.optimizer.zero_grad(set_to_none=True)  # start from clean gradients, whatever initialisation left
        self.ema = EMA(self.params, ema_decay) if ema_decay is not None else None
        self.ema_every = ema_every
        self.updates = 0  # optimiser steps taken
        self._finite = True  # every loss accumulated since the last step was finite

    def accumulate(self, loss: Tensor) -> bool:
        """Back-propagate ``loss`` when it is finite on every rank (a collective); once one is not, the rest of
        this step's losses are skipped and :meth:`step` skips the update."""
        if not self._finite:
            return False
        self._finite = self.guard.finite(loss)
        if self._finite:
            loss.backward()
        return self._finite

    def step(self) -> dict[str, float]:
        """Gradients averaged over ranks, clipped, one AdamW step, the EMA. Returns ``{"<role>_grad_norm": norm
        before clipping}``, or ``{}`` when a non-finite loss skipped the update (counted by the guard)."""
        ok, self._finite = self._finite, True
        if not self.guard.record(f"{self.name} loss", ok):
            self.optimizer.zero_grad(set_to_none=True)
            return {}
        self.dist.sync_grads(self.params.values())
        norm = clip_and_step(self.optimizer, self.params, self.grad_clip)
        self.updates += 1
        if self.ema is not None and self.updates % self.ema_every == 0:
            self.ema.update(self.params)
        return {f"{self.name}_grad_norm": norm}

    def update(self, loss: Tensor) -> dict[str, float]:
        self.accumulate(loss)
        return self.step()

    def state_dict(self) -> dict[str, Tensor]:
        """Full tensors (a collective under FSDP: call it on every rank)."""
        out = prefixed(self.name, {k: full_tensor(p) for k, p in self.params.items()})
        out.update(prefixed(f"optim_{self.name}", optimizer_tensors(self.optimizer, list(self.params))))
        if self.ema is not None:
            out.update(prefixed("ema", self.ema.state_dict()))
        return out

    def load_state_dict(self, tensors: Mapping[str, Tensor]) -> None:
        load_into(self.params, unprefixed(tensors, self.name), self.name)
        load_optimizer_tensors(self.optimizer, list(self.params), unprefixed(tensors, f"optim_{self.name}"))
        if self.ema is not None:
            self.ema.load_state_dict(unprefixed(tensors, "ema"))


@dataclass
class TrainState:
    """Everything a checkpoint restores: ``step`` (iterations done), the trained roles, the frozen tensors of an
    earlier stage (``{prefix: tensors}``, saved as they are) and the non-finite guard's count."""

    generator: TrainedRole
    fake: TrainedRole
    guard: NonFiniteGuard
    step: int = 0
    frozen: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {**self.generator.state_dict(), **self.fake.state_dict()}
        for prefix, values in self.frozen.items():
            tensors.update(prefixed(prefix, values))
        return tensors, {"step": self.step, "updates": self.generator.updates, "skipped_steps": self.guard.skipped}

    def load_state_dict(self, tensors: Mapping[str, Tensor], state: Mapping[str, Any]) -> None:
        self.generator.load_state_dict(tensors)
        self.fake.load_state_dict(tensors)
        self.step = int(state["step"])
        self.generator.updates = int(state.get("updates", 0))
        self.guard.skipped = int(state.get("skipped_steps", 0))

    def ema_applied(self):
        """A context in which the generator holds its EMA weights (to evaluate it)."""
        return self.generator.ema.applied(self.generator.params)
