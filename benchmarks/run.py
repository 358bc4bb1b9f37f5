"""Run every benchmark and write one markdown report (and its raw figures as JSON).

    python -m benchmarks.run --out docs/benchmarks.md            # everything (~10 min on 2 shared cores)
    python -m benchmarks.run --out /tmp/bench.md --quick         # fewer repeats, a smoke run (~3 min)

Run from the repository root with the package importable (``pip install -e .`` or ``PYTHONPATH=src``).
Timings use this process's CPU time on a CPU (see ``benchmarks/timing.py``), one intra-op thread unless
``--threads``; every ratio compares figures measured side by side in this run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks import machine, sections, timing
from benchmarks.report import Report, table


def quiet() -> None:
    """No progress bars or tokenizer warnings from the libraries in the benchmark's output."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def steps(report: Report, root: Path, quick: bool) -> list[tuple[str, object]]:
    """The benchmarks in report order: (name, thunk). ``quick`` shortens runs and repeats."""
    repeats = 3 if quick else 10
    state: dict = {}
    overhead = lambda: state.setdefault("stage1_dirs", sections.training_overhead(
        report, root, ["tiny", "small"], s1_iterations=12 if quick else 22, s2_iterations=4 if quick else 8,
        repeats=2 if quick else 3))
    return [
        ("memory (real architectures)", lambda: sections.real_architectures(report, 32, repeats)),
        ("memory (measured)", lambda: sections.measured_memory(report, root)),
        ("role switches", lambda: sections.switches(report, root, repeats)),
        ("prompt cache", lambda: sections.prompt_cache(report, 4096, repeats)),
        ("noise and AdamW", lambda: sections.rng_and_adamw(report, repeats)),
        ("training overhead", overhead),
        ("before / after", lambda: sections.before_after(
            report, root, ["tiny", "small"], state["stage1_dirs"], rounds=1 if quick else 3,
            s1_iterations=4 if quick else 8, s2_iterations=2 if quick else 4)),
        ("generation", lambda: sections.generation_section(
            report, root, {"tiny": [1, 4, 16, 64], "small": [1, 4, 16, 32]}, 2 if quick else 5)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown report")
    parser.add_argument("--json", type=Path, default=None, help="raw figures (default: the report's path .json)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    timing.use(timing.default_clock("cpu"))
    quiet()
    started, wall0, load0 = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter(), machine.load()
    report = Report()
    loads = {}
    with tempfile.TemporaryDirectory(prefix="rtdmd-bench-") as tmp:
        root = args.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name, step in steps(report, root, args.quick):
            print(f"benchmarks: {name} ...", flush=True)
            t0 = time.perf_counter()
            step()
            loads[name] = (machine.load(), time.perf_counter() - t0)
    minutes = (time.perf_counter() - wall0) / 60
    info = machine.describe(torch.device("cpu")) | {"clock": timing.CLOCK.name + " (process CPU time)"}
    command = " ".join(["python -m benchmarks.run --out", str(args.out), *(["--quick"] if args.quick else [])])
    head = f"""# Benchmarks

Generated on {started} ({minutes:.0f} min) by

    {command}

Every ratio compares figures measured side by side in this run; timings are medians. How to read them and what was
changed: [performance.md](performance.md).

## Machine

{table(list(info), [list(info.values())])}

Load average (1 / 5 / 15 min; 2 cores shared with other jobs): {load0} at the start;
{'; '.join(f'{load} after {name} ({secs / 60:.1f} min)' for name, (load, secs) in loads.items())}.

## Targets of issue 7

{table(["target", "measured", "status", "note"], report.summary)}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(head + "\n" + "\n".join(report.parts))
    report.data["machine"] = info | {"load_start": load0, "loads": loads, "minutes": minutes}
    (args.json or args.out.with_suffix(".json")).write_text(json.dumps(report.data, indent=1, default=str))
    print(f"benchmarks: wrote {args.out} ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
