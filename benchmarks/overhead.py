"""Training overhead: the measured time of each training iteration against the sum of the isolated costs of the
model calls it made, and the calls per iteration against the spec's counts (4.8 for stage 1, 5.9 for stage 2).

The loops run unmodified (``distill.run`` / ``align.run``) with counting components (:mod:`benchmarks.counting`).
At the end of every iteration (its metrics record) the calls it made are replayed one by one with their recorded
inputs (forward, plus a backward when the loop back-propagated through the call), ``repeats`` times each, and the
median of each is summed: the iteration's "isolated cost". Measuring each iteration right next to its own replay
keeps the ratio honest on a machine shared with other jobs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.counting import Call, CallLog, instrumented, tally
from benchmarks.timing import median, now, seconds
from rtdmd.backbones.base import TRAINED_ROLES


@dataclass
class Iteration:
    measured: float  # seconds of the loop's iteration
    isolated: float  # sum of the isolated costs of its calls
    calls: list[Call]
    by_call: Counter = field(default_factory=Counter)  # (kind, name, grad) -> isolated seconds


@dataclass
class StageRun:
    stage: str
    batch: int  # samples per iteration (this process)
    iterations: list[Iteration]
    warmup: int

    @property
    def measured(self) -> list[Iteration]:
        return self.iterations[self.warmup:]

    def ratio(self) -> float:
        """Total measured time over total isolated cost of the measured iterations."""
        return sum(i.measured for i in self.measured) / sum(i.isolated for i in self.measured)

    def ratios(self) -> list[float]:
        return [i.measured / i.isolated for i in self.measured]

    def counts(self) -> Counter:
        """Passes of ``batch`` rows per iteration, over all iterations (warm-up included: counts are exact)."""
        total: Counter = Counter()
        for it in self.iterations:
            total.update(tally(it.calls, self.batch))
        return Counter({k: v / len(self.iterations) for k, v in total.items()})


def isolated_seconds(components, call: Call, repeats: int) -> float:
    """Median seconds of ``call`` replayed alone: its forward with the recorded inputs, and a backward of the
    output's sum when the loop back-propagated through it."""
    backbone = components.backbone._inner
    if call.kind == "velocity":
        fn = backbone.velocity
    elif call.kind == "decode":
        fn = backbone.decode
    else:
        fn = next(e.reward.inner for e in components.rewards.entries if e.name == call.name)
    args, kwargs = call.inputs

    def once() -> None:
        with torch.set_grad_enabled(call.grad):
            out = fn(*args, **kwargs)
            if call.grad:
                out.float().sum().backward()

    times = [seconds(once) for _ in range(repeats)]
    for role in TRAINED_ROLES:  # the loop has stepped and zeroed its gradients already; leave them empty
        for p in backbone.trainable(role).values():
            p.grad = None
    return median(times)


def run_stage(stage: str, config, run_dir: Path, *, from_dir: Path | None = None, warmup: int = 2,
              repeats: int = 3) -> StageRun:
    """Run ``stage`` ("distill" or "align") with instrumented components; time every iteration and replay its
    calls right after it."""
    from rtdmd.train import align, distill

    log = CallLog(record_inputs=True)
    state: dict = {}
    iterations: list[Iteration] = []

    def on_components(components) -> None:
        state["components"] = components
        state["start"] = now()

    def on_iteration() -> None:
        end = now()
        calls = log.iterations()[-1]
        by_call: Counter = Counter()
        for call in calls:
            by_call[(call.kind, call.name, call.grad)] += isolated_seconds(state["components"], call, repeats)
            call.inputs = None  # free the recorded tensors
        iterations.append(Iteration(end - state["start"], sum(by_call.values()), list(calls), by_call))
        state["start"] = now()

    with instrumented(log, on_iteration, on_components):
        if stage == "distill":
            distill.run(config, run_dir)
        else:
            align.run(config, run_dir, from_dir)
    batch = config.distill.batch_size if stage == "distill" else config.align.samples_per_iteration
    return StageRun(stage, batch, iterations, warmup)


# -- the spec's counts --------------------------------------------------------------------------------------

def stage1_expected(stops_fake: list[int], stops_generator: list[int], fake_update_ratio: int,
                    consistency: bool) -> dict[tuple[str, str, bool], float]:
    """Passes per iteration implied by spec 4.1-4.6 for the realised random stops (``stops_generator`` has one
    entry per generator update): rollouts take ``k`` generator steps, all but the generator update's last
    without gradient; the fake score trains on 1 (+2 consistency) passes; a generator update adds one teacher
    CFG evaluation and one fake forward."""
    n = len(stops_fake)
    updates = len(stops_generator)
    out = {
        ("velocity", "generator", False): (sum(stops_fake) + sum(k - 1 for k in stops_generator)) / n,
        ("velocity", "generator", True): updates / n,
        ("velocity", "fake", True): 3.0 if consistency else 1.0,
        ("velocity", "fake", False): updates / n,
        ("velocity", "teacher", False): updates / n,
    }
    return {k: v for k, v in out.items() if v}


SPEC_4_8 = {  # per 10 iterations, k uniform on {1..4}, fake_update_ratio 10 (spec 4.8), as passes per iteration
    ("velocity", "generator", False): 2.65,
    ("velocity", "generator", True): 0.1,
    ("velocity", "fake", True): 3.0,
    ("velocity", "fake", False): 0.1,
    ("velocity", "teacher", False): 0.1,
}


def stage2_expected(n_steps: int, subset: int, fake_updates: int, consistency: bool, rewards: list[str],
                    differentiable: list[str], *, policy: bool = True, dm: bool = True, bp: bool = True,
                    replay: bool = False) -> dict[tuple[str, str, bool], float]:
    """Passes per iteration implied by spec 5.1-5.9: the rollout (all steps, no grad), one decode and every
    reward without grad, the fake update(s), the policy term on the ``subset`` trained steps, the final step
    with grad (shared by DM and BP), DM's teacher CFG + fake forward, BP's decode and differentiable rewards with
    grad. ``replay``: the DM gradient through every step (``dm_backprop: full``) re-runs the rollout with grad."""
    out: Counter = Counter()
    out[("velocity", "generator", False)] += n_steps
    out[("decode", "vae", False)] += 1
    for name in rewards:
        out[("reward", name, False)] += 1
    out[("velocity", "fake", True)] += fake_updates * (3 if consistency else 1)
    if policy:
        out[("velocity", "generator", True)] += subset
    if dm or (bp and differentiable):
        out[("velocity", "generator", True)] += 1
    if dm:
        out[("velocity", "teacher", False)] += 1
        out[("velocity", "fake", False)] += 1
        if replay:
            out[("velocity", "generator", True)] += n_steps
    if bp and differentiable:
        out[("decode", "vae", True)] += 1
        for name in differentiable:
            out[("reward", name, True)] += 1
    return dict(out)


def iteration_times(stage: str, config, run_dir: Path, from_dir: Path | None = None) -> list[float]:
    """Seconds of every iteration of ``stage`` run plainly (no counting wrappers, no replays)."""
    from rtdmd.train import align, distill

    times: list[float] = []
    state: dict = {}

    def on_components(_) -> None:
        state["start"] = now()

    def on_iteration() -> None:
        end = now()
        times.append(end - state["start"])
        state["start"] = end

    with instrumented(CallLog(), on_iteration, on_components, wrap=False):
        if stage == "distill":
            distill.run(config, run_dir)
        else:
            align.run(config, run_dir, from_dir)
    return times
