"""Clocks and side-by-side comparisons.

On a CPU the benchmarks time with the process's CPU time (``time.process_time``: every thread of this process,
nothing of the other processes sharing the machine), which keeps figures comparable while other jobs run; the
wall clock is recorded next to it. On CUDA the clock is the wall clock after a device synchronisation.
Comparisons interleave their variants (A B A B ...) so that whatever load remains hits every variant alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Clock:
    name: str  # "cpu" (process CPU time) or "wall"
    device: torch.device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.name == "cpu" else time.perf_counter()


def default_clock(device: torch.device | str) -> Clock:
    device = torch.device(device)
    return Clock("wall" if device.type == "cuda" else "cpu", device)


CLOCK = default_clock("cpu")


def use(clock: Clock) -> None:
    global CLOCK
    CLOCK = clock


def now() -> float:
    return CLOCK.now()


def seconds(fn: Callable[[], object]) -> float:
    start = now()
    fn()
    return now() - start


def median(values) -> float:
    return statistics.median(values)


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every variant, ``repeats`` times each, in the order A B C A B C ... after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            out[name].append(seconds(fn))
    return out
