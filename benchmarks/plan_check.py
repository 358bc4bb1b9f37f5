"""The planner (``rtdmd plan``) against measurement: real training runs of small configurations on this CPU, with
and without activation checkpointing, their measured peak memory side by side with the planned one.

    python -m benchmarks.plan_check                 # prints the table (a few minutes on 2 cores)
    python -m benchmarks.plan_check --out FILE.md   # and writes it

Measured peak: each configuration runs both stages in a fresh process (``--measure``), through the real loops
(``distill.run``, ``align.run``). When a stage's training loop starts (``Session.progress``) the bytes of every
live tensor are summed (a scan of the garbage collector, storages counted once) and torch's profiler starts
recording the CPU allocator: every allocation and free, with its size, until the loop ends (``Session.finish``).
The peak is the baseline plus the highest running sum of those events. This is the allocator's own account,
independent of the planner's dispatch-level tracker, and it sees what dispatch does not (kernel workspaces,
allocations inside C++ ops). Host memory is the device here, so the planned figure adds what the planner puts
in host memory (stage-1 copies, every prompt's embedding row).

Stage 1 runs 2 iterations with ``fake_update_ratio`` 1 (each has both updates; the second has the optimizer
state), stage 2 runs 2 iterations; the planner plans the same per-rank batch on one process.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from benchmarks import fixtures
from benchmarks.report import table

STAGES = ("distill", "align")
TOLERANCE = 0.15


def live_tensor_bytes() -> int:
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            try:
                storages[storage.data_ptr()] = storage.nbytes()
            except RuntimeError:  # a fake tensor another test left alive: it holds no memory
                continue
    return sum(storages.values())


class AllocatorPeak:
    """The CPU allocator's peak over a stage's training loop (see the module docstring)."""

    def __init__(self):
        self.peak: dict[str, int] = {}
        self.increment: dict[str, int] = {}  # the peak above the baseline: what the loop itself allocated
        self.stage = ""

    def start(self, stage: str) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.stage, self.baseline = stage, live_tensor_bytes()
        self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.profiler.__enter__()

    def stop(self) -> None:
        self.profiler.__exit__(None, None, None)
        events = [e for e in self.profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
        current = top = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            current += event.nbytes()
            top = max(top, current)
        self.peak[self.stage], self.increment[self.stage] = self.baseline + top, top


def measure(config_file: Path, out: Path) -> dict[str, int]:
    """Both stages of ``config_file`` through the real loops; the allocator peak of each training loop."""
    from rtdmd.config import load_config

    torch.set_num_threads(1)
    return measured_runs(load_config(config_file), out).peak


def measured_runs(config, out: Path, stages=STAGES) -> AllocatorPeak:
    """Run ``stages`` of ``config`` through the real loops under an :class:`AllocatorPeak`."""
    from rtdmd.train import align, distill
    from rtdmd.train.session import Session

    meter = AllocatorPeak()
    progress, finish = Session.progress, Session.finish

    def start(self, *args, **kwargs):
        meter.start(self.stage)
        return progress(self, *args, **kwargs)

    def stop(self, *args, **kwargs):
        meter.stop()
        return finish(self, *args, **kwargs)

    Session.progress, Session.finish = start, stop
    try:
        distill.run(config, out / "s1")
        if "align" in stages:
            gc.collect()
            align.run(config, out / "s2", out / "s1")
    finally:
        Session.progress, Session.finish = progress, finish
    return meter


def planned(config_file: Path, prompts: int) -> dict[str, dict]:
    """The planner's figures of both stages on one process, plus what it keeps in host memory (here: the same
    memory): the stage-1 copies and the embedding row of each of the config's ``prompts`` prompts."""
    from rtdmd.app.plan.planner import Planner
    from rtdmd.config import load_config

    planner = Planner(load_config(config_file))
    out = {}
    for stage in STAGES:
        plan = planner.plan(stage, 1)
        host = plan.host["stage-1 copies"] + plan.host["prompt row"] * prompts
        out[stage] = {"device": plan.peak, "host": host, "total": plan.peak + host, "terms": plan.terms}
    return out


SHORT = {"distill": {"iterations": 2, "fake_update_ratio": 1, "batch_size": 4, "checkpoint_every": 0},
         "align": {"iterations": 2, "prompts_per_iteration": 2, "group_size": 2, "checkpoint_every": 0}}


def family_config(root: Path, family: str) -> dict:
    """The test suite's tiny FLUX.1-dev or FLUX.2-klein pipeline (16 px) with the benchmarks' CLIPScore reward."""
    from tests.backbones import tiny_pipelines
    from tests.backbones.conftest import FAMILIES, HW

    folder = root.parent / f"{family}_pipeline"
    if not (folder / "model_index.json").is_file():
        build = {"flux1_dev": lambda: tiny_pipelines.flux1_pipeline(folder, guidance_embeds=True),
                 "flux2_klein": lambda: tiny_pipelines.flux2_klein_pipeline(folder)}[family]
        build()
    raw = fixtures.run_config(root, fixtures.SIZES["tiny"], **SHORT)
    kind = FAMILIES[family][0].rsplit(".", 1)[1]
    raw["backbone"] = {"kind": kind, "path": str(folder), "height": HW, "width": HW,
                       **{k: list(v) if isinstance(v, tuple) else v for k, v in FAMILIES[family][2].items()}}
    return raw


def configurations(root: Path) -> list[tuple[str, Path, int]]:
    """(label, config file, number of distinct prompts) of the small configurations compared."""
    out = []
    variants = [(f"SD3 {size}, {dtype}", lambda r, size=size: fixtures.run_config(r, fixtures.SIZES[size], **SHORT),
                 dtype) for size, dtype in (("small", "fp32"), ("small", "bf16"), ("tiny", "fp32"))]
    variants += [(f"{label} tiny, bf16", lambda r, family=family: family_config(r, family), "bf16")
                 for label, family in (("FLUX.1-dev", "flux1_dev"), ("FLUX.2-klein", "flux2_klein"))]
    for label, make, dtype in variants:
        for checkpointing in (False, True):
            stem = f"{label.replace(' ', '_').replace(',', '').replace('.', '')}_{int(checkpointing)}"
            raw = make(root / stem)
            raw["run"].update(dtype=dtype, activation_checkpointing=checkpointing, progress=False)
            file = root / f"{stem}.yaml"
            file.write_text(yaml.safe_dump(raw))
            name = f"{label}, " + ("checkpointing" if checkpointing else "no checkpointing")
            out.append((name, file, len(fixtures.PROMPTS)))
    return out


def compare(root: Path) -> tuple[list[list], bool]:
    rows, ok = [], True
    for name, file, prompts in configurations(root):
        run_dir = root / (file.stem + "_runs")
        done = subprocess.run([sys.executable, "-m", "benchmarks.plan_check", "--measure", str(file), str(run_dir)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"measuring {name} failed:\n{done.stderr[-3000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        plan = planned(file, prompts)
        for stage in STAGES:
            ratio = plan[stage]["total"] / measured[stage]
            ok &= abs(ratio - 1) <= TOLERANCE
            rows.append([name, stage, f"{measured[stage] / 2**20:.2f}", f"{plan[stage]['total'] / 2**20:.2f}",
                         f"{ratio:.3f}", "yes" if abs(ratio - 1) <= TOLERANCE else "NO"])
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", nargs=2, metavar=("CONFIG", "RUN_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return 0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="rtdmd-plan-check-") as tmp:
        rows, ok = compare(Path(tmp))
    text = table(["configuration", "stage", "measured MiB", "planned MiB", "planned / measured",
                  f"within {TOLERANCE:.0%}"], rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
