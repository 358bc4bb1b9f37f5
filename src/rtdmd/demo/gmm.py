"""The analytic world's demo and report: both stages, then scatter plots of teacher, stage-1, stage-2 and exact
tilted samples per prompt, training curves, ``metrics.json`` and ``report.html``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from rtdmd.app.runs import load_run  # noqa: E402
from rtdmd.app.world_metrics import evaluate_role, evaluate_samples, sample_role  # noqa: E402
from rtdmd.demo import common as shared  # noqa: E402
from rtdmd.demo.plots import curves  # noqa: E402


def scatter_grid(columns: Mapping[str, Mapping[str, Tensor]], out: Path, max_points: int = 1500) -> Path:
    """Rows = prompts, columns = sample sets (e.g. teacher, stage 1, stage 2, p~); first two coordinates."""
    prompts = list(next(iter(columns.values())))
    fig, axes = plt.subplots(len(prompts), len(columns), figsize=(3.0 * len(columns), 2.8 * len(prompts)),
                             squeeze=False, sharex=True, sharey=True)
    for j, (name, by_prompt) in enumerate(columns.items()):
        for i, prompt in enumerate(prompts):
            x = by_prompt[prompt][:max_points].double().cpu()
            ax = axes[i][j]
            ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else x[:, 0] * 0, s=2, alpha=0.35)
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"prompt '{prompt}'", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def training_curves(stage1: Path, stage2: Path, out_dir: Path) -> list[Path]:
    return [
        curves([("stage 1", stage1)], [("eval/ed_teacher", "energy distance to teacher"),
                                        ("eval/weight_error_teacher", "component-weight error"),
                                        ("fake_loss", "fake-score loss")], out_dir / "curves_stage1.png",
               "stage 1 (AC-DMD)"),
        curves([("stage 2", stage2)], [("eval/ed_tilted", "energy distance to p~"),
                                        ("eval/reward", "mean reward (eval)"), ("reward/total", "mean reward (train)"),
                                        ("eval/std", "sample std")], out_dir / "curves_stage2.png",
               "stage 2 (RTDMD)"),
    ]


QUICK = ("distill.iterations=300", "align.iterations=60", "backbone.fit_steps=500", "run.eval_samples=500")


def demo(out: Path, config_name: str, overrides: list[str], quick: bool) -> dict:
    """Both stages on an analytic world, then every closed-form metric of teacher, stage 1 and stage 2."""
    out = Path(out)
    config = shared.demo_config(config_name, overrides, QUICK, quick)
    shared.check_out_dir(out)
    evaluate = lambda parts, step: evaluate_role(parts, config)["summary"]  # noqa: E731
    timings = shared.train_stages(config, out, evaluate_stage1=evaluate, evaluate_stage2=evaluate)

    # Final evaluation of both generators (EMA weights) and the teacher, on the same seeds.
    stage1, stage2 = load_run(out / "stage1"), load_run(out / "stage2")
    world, rewards, n = stage1.components.world, stage1.components.rewards, config.run.eval_samples
    roles = {"teacher": (stage1.components, {"role": "teacher", "teacher_steps": 100}),
             "stage1": (stage1.components, {}), "stage2": (stage2.components, {})}
    samples = {name: sample_role(parts, config, **kwargs) for name, (parts, kwargs) in roles.items()}
    results = {name: evaluate_samples(parts, config, samples[name]) for name, (parts, _) in roles.items()}
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
    shared.write_metrics(out, {"summary": summary, **results})

    # Plots: the evaluated samples (the same seeds in every column).
    gen = torch.Generator().manual_seed(config.run.seed + 99)
    columns = {
        "teacher": samples["teacher"], "stage 1 (4 steps)": samples["stage1"], "stage 2 (4 steps)": samples["stage2"],
        "exact p~": {p: world.sample_tilted(i, n, rewards, config.beta, gen) for i, p in enumerate(world.prompt_names)},
    }
    figures = [scatter_grid(columns, out / "samples.png"), *training_curves(out / "stage1", out / "stage2", out)]
    shared.write_html(out, "rtdmd demo: the analytic world", [
        ("Summary", shared.table(["metric", "value"], list(summary.items()), digits=4)),
        ("Samples (teacher, stage 1, stage 2, exact p~; first two coordinates)", shared.figure(figures[0])),
        ("Training", "".join(shared.figure(f) for f in figures[1:])),
    ])
    return summary
