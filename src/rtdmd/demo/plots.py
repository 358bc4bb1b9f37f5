"""Plot helpers shared by the reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rtdmd.train.logging import read_metrics  # noqa: E402


def curves(run_dirs: Sequence[tuple[str, Path]], keys: Sequence[tuple[str, str]], out: Path,
           title: str = "", max_columns: int = 4) -> Path:
    """One panel per ``(metric key, label)``, ``max_columns`` panels a row; one line per ``(stage name, run
    dir)``; x = iteration."""
    ncols = min(len(keys), max_columns)
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, (key, label) in zip(axes.flat, keys):
        for name, run_dir in run_dirs:
            points = [(r["step"], r[key]) for r in read_metrics(run_dir) if isinstance(r.get(key), (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
