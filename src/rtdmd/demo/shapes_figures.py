"""Figures and the HTML page of the shapes world's demo (:mod:`rtdmd.demo.shapes`); matplotlib, Agg backend.

- ``samples.png``: rows = held-out prompts, columns = teacher / stage 1 / stage 2, the same seeds in every
  column; a green frame marks an image the oracle accepts, a red one an image it rejects.
- ``curves_stage1.png``, ``curves_stage2.png``: losses, training rewards and the held-out accuracy over training.
- ``watch.png``: stage 2's held-out oracle accuracy next to the training rewards, image statistics and
  within-prompt diversity at every evaluation, with the reward-hacking warnings.
- ``accuracy_by_tag.png``, ``speed.png``: the per-tag accuracies (± standard error) and the generation speed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rtdmd.config import dump_config  # noqa: E402
from rtdmd.demo import common as shared  # noqa: E402
from rtdmd.demo.plots import curves  # noqa: E402
from rtdmd.train.logging import read_metrics  # noqa: E402
from rtdmd.worlds.shapes import oracle  # noqa: E402
from rtdmd.worlds.shapes.prompts import TAGS  # noqa: E402

DIVERSITY_RATIO = 0.80  # the diversity claim: stage 2 keeps at least this fraction of the teacher's (issue 13)
COLUMNS = {"stage1": "stage 1 (4 steps)", "stage2": "stage 2 (4 steps)"}
ACCEPT, REJECT = (0.1, 0.7, 0.2), (0.85, 0.1, 0.1)


def label(name: str) -> str:
    if name.startswith("teacher_"):
        return f"teacher ({name.split('_')[1]} steps, CFG)"
    return COLUMNS.get(name, name)


def framed_strip(images: np.ndarray, verdicts: np.ndarray, scale: int = 2, frame: int = 2) -> np.ndarray:
    """Images ``(n, 3, H, W)`` side by side, each upscaled and framed by its oracle verdict: ``(h, w, 3)``."""
    tiles = []
    for image, ok in zip(images, verdicts):
        tile = np.kron(np.moveaxis(image, 0, -1), np.ones((scale, scale, 1)))
        h, w, _ = tile.shape
        framed = np.ones((h + 2 * frame, w + 2 * frame, 3)) * np.asarray(ACCEPT if ok else REJECT)
        framed[frame:frame + h, frame:frame + w] = tile
        tiles.append(np.pad(framed, ((0, 0), (0, 2), (0, 0)), constant_values=1.0))
    return np.concatenate(tiles, axis=1)


def sample_grid(samples: dict, metadata: dict, names: list[str], out: Path, per_cell: int = 4) -> Path:
    """Rows = prompts, columns = ``names`` (each ``{prompt: images}``), ``per_cell`` seeds per cell."""
    prompts = list(samples[names[0]])
    cell = 0.8  # inches per image
    fig, axes = plt.subplots(len(prompts), len(names), figsize=(2.8 + len(names) * (per_cell * cell + 0.2),
                                                                cell * len(prompts) + 0.5), squeeze=False)
    for j, name in enumerate(names):
        for i, prompt in enumerate(prompts):
            x = samples[name][prompt][:per_cell].detach().float().cpu().numpy()
            verdicts = oracle.score(x, [metadata[prompt]] * len(x))
            ax = axes[i][j]
            ax.imshow(framed_strip(x, verdicts), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if i == 0:
                ax.set_title(label(name), fontsize=9)
            if j == 0:
                ax.set_ylabel(prompt, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.8)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def tag_bars(results: dict, names: list[str], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    tags = [*TAGS, "overall"]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        s, se = results[name]["summary"], results[name]["se"]
        keys = [f"accuracy/{t}" for t in TAGS] + ["accuracy"]
        ax.bar(np.arange(len(tags)) + j * width, [s.get(k, np.nan) for k in keys], width,
               yerr=[se.get(k, 0.0) for k in keys], capsize=2, label=label(name))
    ax.set_xticks(np.arange(len(tags)) + width * (len(names) - 1) / 2, tags, fontsize=8)
    ax.set_ylabel("held-out oracle accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=len(names))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def speed_bars(summary: dict, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.6))
    for ax, kind in zip(axes, ("wall", "cpu")):
        values = [summary.get(f"teacher_{kind}_seconds"), summary.get(f"generator_{kind}_seconds")]
        ax.bar(["teacher\n50 steps, CFG", "generator\n4 steps"], [v or 0 for v in values], color=["#888", "#2a7"])
        speedup = summary.get(f"speedup_{kind}")
        ax.set_title(f"{kind} seconds per batch of {summary.get('batch_images')} (median)"
                     + (f": {speedup:.1f}x" if speedup else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def watch_plot(watch: dict, reference: dict, stage1: dict, out: Path, monitors: tuple[str, ...] = ()) -> Path:
    """Stage-2 evaluations. Top: the held-out accuracy, then each training reward on the training rollouts (mean
    since the previous evaluation) next to the same reward of the EMA generator on the held-out prompts. Bottom:
    image statistics and within-prompt diversity. ``monitors``: rewards scored on the held-out prompts but not
    trained on. Dashed: the teacher; red vertical lines: warnings."""
    history = watch["history"]
    rewards = sorted({k[len("train_reward/"):] for h in history for k in h if k.startswith("train_reward/")})
    named = [r for r in rewards if r != "total"]  # with one reward, the total is its weighted copy: no panel
    rewards = named + (["total"] if "total" in rewards and len(named) > 1 else [])
    monitors = [m for m in monitors if m not in rewards and any(m in h for h in history)]
    top = [("held-out oracle accuracy", [("accuracy", "held-out")])]
    top += [(f"reward {r}", [(f"train_reward/{r}", "training"), ("reward" if r == "total" else r, "held-out")])
            for r in rewards]
    top += [(f"{m} (monitored, not trained on)", [(m, "held-out")]) for m in monitors]
    bottom = [("mean intensity", [("mean_intensity", "held-out")]), ("saturation", [("saturation", "held-out")]),
              ("colour entropy (bits)", [("color_entropy", "held-out")]),
              ("within-prompt diversity", [("diversity", "held-out")])]
    ncols = max(len(top), len(bottom))
    fig, axes = plt.subplots(2, ncols, figsize=(3.3 * ncols, 5.8), squeeze=False)
    for ax in axes.flat[len(top):ncols]:
        ax.axis("off")
    for ax in axes[1][len(bottom):]:
        ax.axis("off")
    for ax, (title, keys) in [*zip(axes[0], top), *zip(axes[1], bottom)]:
        for key, name in keys:
            points = [(h["step"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
            if not points:
                continue
            xs, ys = zip(*points)
            line, = ax.plot(xs, ys, marker=".", label=name)
            if key == "accuracy" and any("accuracy_se" in h for h in history):
                se = np.asarray([h.get("accuracy_se") or 0.0 for h in history])
                ax.fill_between(xs, np.asarray(ys) - se, np.asarray(ys) + se, alpha=0.2, color=line.get_color())
            if name == "held-out" and key in reference:
                ax.axhline(reference[key], color=line.get_color(), ls="--", lw=1, label="teacher, held-out")
        if title.startswith("held-out oracle"):
            ax.axhline(stage1["accuracy"], color="C1", ls=":", lw=1, label="stage 1")
        if title.startswith("within-prompt"):
            ax.axhline(DIVERSITY_RATIO * reference["diversity"], color="C3", ls=":", lw=1,
                       label=f"{DIVERSITY_RATIO:.0%} of teacher")
        for warning in watch["warnings"]:
            ax.axvline(warning["step"], color="red", alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("stage-2 iteration", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def training_curves(out: Path, reference: dict) -> list[Path]:
    stage1, stage2 = out / "stage1", out / "stage2"
    s2_keys = sorted({k for r in read_metrics(stage2) for k in r if k.startswith(("reward/", "loss/"))})
    return [
        curves([("stage 1", stage1)], [("fake_loss", "fake-score loss"), ("dmd_grad_norm", "DMD gradient norm"),
                                       ("eval/accuracy", f"held-out accuracy (teacher {reference['accuracy']:.3f})")],
               out / "curves_stage1.png", "stage 1 (AC-DMD)"),
        curves([("stage 2", stage2)], [(k, k) for k in s2_keys] + [("fake_loss", "fake-score loss")],
               out / "curves_stage2.png", "stage 2 (RTDMD), per iteration"),
    ]


def write_report(out: Path, config, results: dict, samples: dict, metadata: dict, reference: str, summary: dict,
                 claims: dict, watch: dict) -> Path:
    """All figures and ``out/report.html``; ``metadata``: the held-out prompts' GenEval metadata by text."""
    out = Path(out)
    names = [n for n in results if n.startswith("teacher_")] + ["stage1", "stage2"]
    grid_names = [reference, "stage1", "stage2"]
    monitors = [m for m in (summary.get("monitored_rewards") or "").split(",") if m]
    figs = {
        "grid": sample_grid(samples, metadata, grid_names, out / "samples.png"),
        "tags": tag_bars(results, names, out / "accuracy_by_tag.png"),
        "speed": speed_bars(summary, out / "speed.png"),
        "watch": watch_plot(watch, results[reference]["summary"], results["stage1"]["summary"], out / "watch.png",
                            tuple(monitors)),
    }
    figs["curves1"], figs["curves2"] = training_curves(out, results[reference]["summary"])

    def acc(name, key):
        s, se = results[name]["summary"].get(key), results[name]["se"].get(key)
        return f"{s:.3f} ± {se:.3f}" if se is not None and se == se else shared.fmt(s)

    tag_rows = [[t, *[acc(n, f"accuracy/{t}") for n in names]] for t in TAGS]
    tag_rows.append(["overall (mean of tags)", *[acc(n, "accuracy") for n in names]])
    rewards = [r.name for r in config.rewards]
    other_rows = [[k, *[results[n]["summary"].get(k) for n in names]]
                  for k in [*rewards, "reward", "diversity", "mean_intensity", "saturation", "color_entropy"]]
    other_rows += [[f"{k} (monitored, not trained on)", *[results[n]["summary"].get(k) for n in names]]
                   for k in monitors]
    claim_rows = [[k, c["value"], c.get("se"), f"{'<=' if c.get('at_most') else '>='} {c['threshold']:g}", c["holds"]]
                  for k, c in claims.items()]
    timing_rows = [[k, v] for k, v in summary.items() if k.endswith("_seconds") or k.startswith(("load_", "speedup"))]
    warnings = "".join(f"<p class='warn'>{shared.fmt(w['message'])}</p>" for w in watch["warnings"]) or \
        shared.paragraph("No warning: the training rewards never rose while the held-out accuracy fell.")
    rule = watch["rule"]
    n = summary["seeds_per_prompt"]
    sections = [
        ("Claims", shared.paragraph(
            f"Held-out prompts: {summary['held_out_prompts']}, {n} seeds each (the same seeds for every model); "
            f"± is one standard error over seeds (of the paired difference, for accuracy differences). Reference: "
            f"{label(reference)}. The stage-1 claim is checked one-sided (not more than 0.05 below the teacher); "
            f"the AUC claims measure how well each trained proxy reward still ranks the oracle's verdicts on stage "
            f"2's samples (a hacked reward would not).")
         + shared.table(["claim", "value", "± s.e.", "holds when", "holds"], claim_rows)),
        ("Oracle accuracy per tag (held-out prompts)", shared.table(["tag", *map(label, names)], tag_rows)
         + shared.figure(figs["tags"])),
        ("Training rewards, image statistics and diversity (held-out prompts)",
         shared.table(["metric", *map(label, names)], other_rows)),
        ("Samples", shared.figure(figs["grid"], "Rows: held-out prompts. Same seeds in every column. Green frame: "
                                                "the oracle accepts the image; red: it rejects it.")),
        ("Speed", shared.figure(figs["speed"], "Identical batches (prompts and seeds), medians over batches, same run.")
         + shared.table(["timing", "value"], timing_rows, digits=2)),
        ("Watching for reward hacking (stage 2)", shared.paragraph(
            f"Rule: over the last {rule['window']} evaluations, least-squares lines of the training reward and of "
            f"the held-out {watch['signal']} against the step; warn when the reward's fitted change is above "
            f"{rule['min_rise']} and the held-out signal's fitted change is below -{rule['min_drop']}.")
         + warnings + shared.figure(figs["watch"])),
        ("Training", shared.figure(figs["curves1"]) + shared.figure(figs["curves2"])),
        ("Configuration", f"<pre>{shared.fmt(dump_config(config))}</pre>"),
    ]
    return shared.write_html(out, "rtdmd demo: the shapes world", sections)
