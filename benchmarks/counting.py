"""Counting wrappers around a backbone and its rewards: every model call a training loop makes is recorded
(what, which role, how many rows, with or without gradient, how long its forward took), without touching the
loops. :func:`instrumented` swaps the wrappers in where ``distill.run`` / ``align.run`` build their components.

A call is ``velocity`` (one role's network, the teacher with its CFG as ONE call), ``decode`` (the VAE) or
``reward`` (one reward model). ``grad`` means the output is part of a graph that the loop back-propagates, i.e.
the call costs a forward and a backward.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from benchmarks import timing
from rtdmd.rewards.base import RewardSet, WeightedReward


@dataclass
class Call:
    kind: str  # "velocity", "decode" or "reward"
    name: str  # role ("teacher", "generator", "fake") or reward name; "vae" for decode
    rows: int  # batch rows of the call
    grad: bool  # output requires grad: the loop back-propagates through it (forward + backward)
    seconds: float  # wall time of the forward
    guidance: float | None = None
    inputs: tuple | None = None  # (args, kwargs) detached clones, when recording for replay


@dataclass
class CallLog:
    """Calls in order, cut into iterations by :meth:`mark` (one mark per loop iteration)."""

    record_inputs: bool = False
    calls: list[Call] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)  # index into calls where each iteration ends

    def add(self, call: Call) -> None:
        self.calls.append(call)

    def mark(self) -> None:
        self.marks.append(len(self.calls))

    def iterations(self) -> list[list[Call]]:
        bounds = [0, *self.marks]
        return [self.calls[a:b] for a, b in zip(bounds, bounds[1:])]

    def clear(self) -> None:
        self.calls.clear()
        self.marks.clear()


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


class CountingBackbone:
    """A backbone whose ``velocity`` and ``decode`` calls are recorded in ``log``; everything else delegates."""

    def __init__(self, backbone, log: CallLog):
        self.__dict__["_inner"] = backbone
        self.__dict__["_log"] = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def _timed(self, kind: str, name: str, fn: Callable, args: tuple, kwargs: dict, rows: int,
               guidance: float | None = None) -> Tensor:
        inputs = _detached((args, kwargs)) if self._log.record_inputs else None
        start = timing.now()
        out = fn(*args, **kwargs)
        self._log.add(Call(kind, name, rows, bool(out.requires_grad), timing.now() - start, guidance, inputs))
        return out

    def role(self, name: str, guidance: float | None = None):
        velocity = self._inner.role(name, guidance)
        return lambda x, sigma, cond: self._timed("velocity", name, velocity, (x, sigma, cond), {}, x.shape[0],
                                                  guidance)

    def decode(self, x: Tensor) -> Tensor:
        return self._timed("decode", "vae", self._inner.decode, (x,), {}, x.shape[0])


class CountingReward:
    """A reward whose calls are recorded in ``log`` under ``name``."""

    def __init__(self, reward, name: str, log: CallLog):
        self.inner, self.name, self.log = reward, name, log
        self.differentiable = reward.differentiable

    def __call__(self, images: Tensor, prompts: Sequence[str], metadata=None) -> Tensor:
        inputs = _detached(((images, list(prompts), metadata), {})) if self.log.record_inputs else None
        start = timing.now()
        out = self.inner(images, prompts, metadata)
        self.log.add(Call("reward", self.name, images.shape[0], bool(out.requires_grad), timing.now() - start,
                          None, inputs))
        return out


def counting_rewards(rewards: RewardSet, log: CallLog) -> RewardSet:
    return RewardSet([WeightedReward(e.name, CountingReward(e.reward, e.name, log), e.weight, e.bp_scale)
                      for e in rewards.entries])


@contextlib.contextmanager
def instrumented(log: CallLog, on_iteration: Callable[[], None] | None = None,
                 on_components: Callable[[Any], None] | None = None, wrap: bool = True) -> Iterator[CallLog]:
    """Within the block, ``distill.run`` and ``align.run`` build counting components (``wrap=False``: the plain
    ones, to time iterations only), and every metrics record they log (one per iteration with ``log_every=1``)
    marks an iteration boundary in ``log`` and then calls ``on_iteration()``. ``on_components(components)`` sees
    the components once they are built."""
    from rtdmd.train import align, distill, session  # noqa: F401  (loaded, so that their names get patched)
    from rtdmd.train.components import Components, build_components
    from rtdmd.train.logging import MetricsLogger

    def build(config, device):
        parts = build_components(config, device)
        wrapped = parts
        if wrap:
            wrapped = Components(parts.world, CountingBackbone(parts.backbone, log),
                                 counting_rewards(parts.rewards, log))
        if on_components is not None:
            on_components(wrapped)
        return wrapped

    class MarkingLogger(MetricsLogger):
        def log(self, step: int, metrics) -> None:
            super().log(step, metrics)
            if "skipped_steps" in metrics:  # the per-iteration record (not init, evaluation or signal records)
                log.mark()
                if on_iteration is not None:
                    on_iteration()

    patch = patcher()
    patch.everywhere(build_components, build)
    patch.everywhere(MetricsLogger, MarkingLogger)
    try:
        yield log
    finally:
        patch.undo()


def patcher():
    """A minimal attribute patcher (no pytest dependency): ``patch(obj, name, value)``,
    ``patch.everywhere(original, value)``, then ``patch.undo()``."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def everywhere(original: Any, value: Any) -> None:
        """Replace ``original`` wherever a module of ``rtdmd.train`` binds it: the loops import names at module
        level or inside functions (which read the defining module's attribute at call time)."""
        for module_name, module in list(sys.modules.items()):
            if module is not None and module_name.startswith("rtdmd.train"):
                for attr, obj in list(vars(module).items()):
                    if obj is original:
                        patch(module, attr, value)

    def undo() -> None:
        while saved:
            obj, name, value = saved.pop()
            setattr(obj, name, value)

    patch.everywhere = everywhere
    patch.undo = undo
    return patch


# -- summaries ----------------------------------------------------------------------------------------------

def key(call: Call) -> tuple[str, str, bool]:
    return call.kind, call.name, call.grad


def tally(calls: Sequence[Call], batch: int | None = None) -> Counter:
    """``{(kind, name, grad): count}``; with ``batch``, counts are in passes of ``batch`` rows (rows / batch),
    so that one call on ``2 B`` rows (the two consistency copies) counts as two passes."""
    out: Counter = Counter()
    for call in calls:
        out[key(call)] += call.rows / batch if batch else 1
    return out
