"""``rtdmd evaluate``: the world's metrics of a trained run as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def evaluate_command(args) -> int:
    from rtdmd.train.runs import load_run
    from rtdmd.worlds.evaluate import evaluate_role

    loaded = load_run(args.run, args.device)
    result = evaluate_role(loaded.components, loaded.config, role=args.role, num=args.num, seed=args.seed,
                           teacher_steps=args.teacher_steps)
    result = {"run": str(args.run), "stage": loaded.stage, "step": loaded.step, "role": args.role, **result}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"rtdmd: wrote {args.out}")
    else:
        print(text)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained run on its world")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: print)")
    p.add_argument("--role", choices=["generator", "teacher"], default="generator")
    p.add_argument("--num", type=int, default=None, help="samples per prompt (default: run.eval_samples)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=evaluate_command)
