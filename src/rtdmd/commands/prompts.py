"""``rtdmd prompts``: the registered public prompt sets, and GenEval-style training prompts.

- ``rtdmd prompts list``: every registered set (name, prompts, use, metrics the paper reports, source);
- ``rtdmd prompts fetch NAME...``: fetch, verify and cache sets (``t2i_compbench`` names its 8 categories), so
  that a later run works offline; prints each cached file and its sha256;
- ``rtdmd prompts geneval --num N --seed S --out FILE``: N GenEval-style training prompts with GenEval
  metadata, none of them a GenEval test prompt (:mod:`rtdmd.data.geneval_prompts`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rtdmd.data import benchmarks, geneval_prompts
from rtdmd.data.fetch import fetch, sha256_bytes, write_atomic
from rtdmd.errors import UserError


def list_command(args) -> int:
    for bench in benchmarks.BENCHMARKS.values():
        metrics = ", ".join(benchmarks.METRICS[m] for m in bench.metrics) or "-"
        print(f"{bench.name:26s} {bench.count:6d} prompts  {bench.use:5s}  metrics: {metrics:50s} "
              f"{bench.file.repo}@{bench.file.commit[:8]}:{bench.file.path}")
    return 0


def fetch_command(args) -> int:
    for bench in benchmarks.expand(args.names):
        prompts = bench.load()
        print(f"rtdmd: {bench.name}: {len(prompts)} prompts, sha256 {bench.file.sha256} verified, "
              f"cached at {fetch(bench.file)}")
    return 0


def geneval_command(args) -> int:
    if args.num < 1:
        raise UserError(f"--num must be at least 1, got {args.num}")
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a directory: give a .jsonl file name")
    if args.out.suffix != ".jsonl":
        raise UserError(f"--out {args.out}: the prompts carry metadata, give a .jsonl file name")
    prompts = geneval_prompts.training_prompts(args.num, args.seed)
    data = geneval_prompts.to_jsonl(prompts).encode("utf-8")
    write_atomic(args.out, data)
    mix = Counter(m["tag"] for m in prompts.metadata)
    shares = ", ".join(f"{task} {mix[task] / len(prompts):.3f}" for task in geneval_prompts.TASK_WEIGHTS)
    print(f"rtdmd: wrote {args.out} ({len(prompts)} prompts, seed {args.seed}, sha256 {sha256_bytes(data)}): "
          f"{shares}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("prompts", help="public prompt sets (list, fetch) and GenEval-style training prompts")
    commands = p.add_subparsers(dest="prompts_command", required=True, metavar="ACTION")
    commands.add_parser("list", help="the registered prompt sets").set_defaults(func=list_command)
    f = commands.add_parser("fetch", help="fetch, verify and cache registered prompt sets")
    f.add_argument("names", nargs="+", metavar="NAME", help="set names (rtdmd prompts list), or t2i_compbench")
    f.set_defaults(func=fetch_command)
    g = commands.add_parser("geneval", help="GenEval-style training prompts, disjoint from GenEval's test set")
    g.add_argument("--num", type=int, required=True, help="number of prompts")
    g.add_argument("--seed", type=int, default=0, help="the same seed gives the same file")
    g.add_argument("--out", type=Path, required=True, help="output .jsonl (GenEval's metadata schema)")
    g.set_defaults(func=geneval_command)
