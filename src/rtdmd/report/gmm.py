"""Report of the analytic world: scatter plots of teacher, stage-1, stage-2 and exact tilted samples per
prompt, training curves, and the metrics table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from rtdmd.report.plots import curves  # noqa: E402


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
