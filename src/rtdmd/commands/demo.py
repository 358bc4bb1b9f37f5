"""``rtdmd demo``: the main job on the embedded default. Both stages on the analytic world, then a report:
``metrics.json``, sample plots (teacher, stage 1, stage 2, exact p~ per prompt) and training curves."""

from __future__ import annotations

import json
import time
from pathlib import Path

QUICK = ["distill.iterations=300", "align.iterations=60", "backbone.fit_steps=500", "run.eval_samples=500"]


def gmm_demo(out: Path, config_name: str, overrides: list[str], quick: bool) -> dict:
    import torch

    from rtdmd.config import load_config
    from rtdmd.report.gmm import scatter_grid, training_curves
    from rtdmd.train import align, distill
    from rtdmd.train.runs import load_run
    from rtdmd.worlds.evaluate import evaluate_role, sample_role

    config = load_config(config_name, (QUICK if quick else []) + overrides)
    evaluate = lambda parts, step: evaluate_role(parts, config)["summary"]  # noqa: E731
    timings = {}
    t0 = time.perf_counter()
    distill.run(config, out / "stage1", evaluate=evaluate)
    timings["stage1_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    align.run(config, out / "stage2", out / "stage1", evaluate=evaluate)
    timings["stage2_seconds"] = time.perf_counter() - t0

    # Final evaluation of both generators (EMA weights) and the teacher, on the same seeds.
    stage1, stage2 = load_run(out / "stage1"), load_run(out / "stage2")
    world, rewards, n = stage1.components.world, stage1.components.rewards, config.run.eval_samples
    results = {"teacher": evaluate_role(stage1.components, config, role="teacher", teacher_steps=100)}
    results["stage1"] = evaluate_role(stage1.components, config)
    results["stage2"] = evaluate_role(stage2.components, config)
    first = json.loads((out / "stage1" / "metrics.jsonl").read_text().splitlines()[1])  # eval at step 0
    untrained = first.get("eval/ed_teacher")
    s1 = results["stage1"]["summary"]
    summary = {
        "untrained_ed_teacher": untrained,
        "stage1_ed_teacher": s1["ed_teacher"], "ed_floor": s1["ed_teacher_floor"],
        "stage1_gap_closed": (untrained - s1["ed_teacher"]) / (untrained - s1["ed_teacher_floor"]) if untrained else None,
        "stage1_weight_error": s1["weight_error_teacher"],
        **{f"stage2_{k}": results["stage2"]["summary"][k] for k in
           ("ed_tilted", "ed_tilted_floor", "ed_teacher_to_tilted", "reward", "reward_tilted", "reward_teacher",
            "weight_error_tilted", "std", "std_tilted")},
        **timings,
    }
    s2 = results["stage2"]["summary"]
    gap = s2["reward_tilted"] - s2["reward_teacher"]
    summary["stage2_reward_error_vs_gap"] = abs(s2["reward"] - s2["reward_tilted"]) / abs(gap) if gap else None
    summary["stage2_ed_ratio_vs_teacher"] = s2["ed_tilted"] / s2["ed_teacher_to_tilted"]
    (out / "metrics.json").write_text(json.dumps({"summary": summary, **results}, indent=1))

    # Plots: the same seeds for every column.
    gen = torch.Generator().manual_seed(config.run.seed + 99)
    columns = {
        "teacher": sample_role(stage1.components, config, role="teacher", teacher_steps=100),
        "stage 1 (4 steps)": sample_role(stage1.components, config),
        "stage 2 (4 steps)": sample_role(stage2.components, config),
        "exact p~": {p: world.sample_tilted(i, n, rewards, config.beta, gen) for i, p in enumerate(world.prompt_names)},
    }
    scatter_grid(columns, out / "samples.png")
    training_curves(out / "stage1", out / "stage2", out)
    return summary


def demo_command(args) -> int:
    out = Path(args.out)
    summary = gmm_demo(out, args.config, args.overrides, args.quick)
    print(json.dumps(summary, indent=1))
    print(f"rtdmd: report in {out} (metrics.json, samples.png, curves_stage1.png, curves_stage2.png)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: both stages on the embedded default world, then a report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--config", default="gmm/default", help="world config (default: the analytic gmm/default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="a short run for CI (same pipeline, fewer iterations)")
    p.set_defaults(func=demo_command)
