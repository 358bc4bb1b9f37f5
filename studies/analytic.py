"""Training and measuring arms on the analytic world with the library's own trainers and configs: a run is
``rtdmd distill`` / ``rtdmd align`` on a shipped config with ``--set`` overrides, cached in its folder so that a
study can be resumed; its metrics are the world's closed-form ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from rtdmd.app.runs import load_run
from rtdmd.app.world_metrics import evaluate_role
from rtdmd.config import Config, load_config
from rtdmd.train import align, distill
from rtdmd.train.checkpoint import latest_checkpoint

QUICK = ("distill.iterations=8", "distill.batch_size=64", "align.iterations=4", "align.prompts_per_iteration=4",
         "align.group_size=4", "backbone.fit_steps=20", "backbone.fit_points=2000", "backbone.hidden=32",
         "run.eval_samples=100", "run.progress=false")
FULL = ("run.progress=false",)


def config(name: str, overrides: Sequence[str], seed: int, quick: bool) -> Config:
    # a seed is the whole run: the students' initialisation and regression data as well as training's draws
    return load_config(name, [*(QUICK if quick else FULL), *overrides, f"run.seed={seed}", f"backbone.seed={seed}"])


def finished(run_dir: Path, iterations: int) -> bool:
    checkpoint = latest_checkpoint(run_dir / "checkpoints") if run_dir.exists() else None
    return checkpoint is not None and int(checkpoint.name.split("_")[1]) >= iterations


def started(run_dir: Path) -> bool:
    """A checkpoint to continue from (a study killed mid-run resumes it)."""
    return any((run_dir / "checkpoints").glob("step_*"))


def stage1(cfg: Config, run_dir: Path) -> Path:
    if not finished(run_dir, cfg.distill.iterations):
        distill.run(cfg, run_dir, resume=started(run_dir))
    return run_dir


def stage2(cfg: Config, run_dir: Path, from_dir: Path, evaluate: Callable | None = None) -> Path:
    """Stage 2 (``evaluate(parts, step)`` runs every ``run.eval_every`` steps; its results are kept in
    ``curve.json``, so a cached run still has its curve)."""
    curve_file = run_dir / "curve.json"
    if not finished(run_dir, cfg.align.iterations):
        curve = []

        def hook(parts, step):
            result = evaluate(parts, step) if evaluate is not None else {}
            curve.append({"step": step, **result})
            return result

        align.run(cfg, run_dir, from_dir, resume=started(run_dir), evaluate=hook if evaluate is not None else None)
        curve_file.write_text(json.dumps(curve))
    return run_dir


def curve(run_dir: Path) -> list[dict]:
    file = run_dir / "curve.json"
    return json.loads(file.read_text()) if file.exists() else []


def metrics(run_dir: Path, cfg: Config, num: int | None = None) -> dict:
    """The world's closed-form metrics of a run's EMA generator: ``{"summary": ..., "prompts": ...}``."""
    loaded = load_run(run_dir)
    return evaluate_role(loaded.components, cfg, num=num)


def worst(result: dict, key: str) -> float:
    return max(row[key] for row in result["prompts"].values())


def reward_error(row: dict) -> float:
    """|E[r] - E_p~[r]| as a share of the teacher-to-p~ gap."""
    return abs(row["reward"] - row["reward_tilted"]) / abs(row["reward_tilted"] - row["reward_teacher"])


def tilt_errors(result: dict) -> dict[str, float]:
    """The fidelity criteria against p~, worst prompt: weight error, reward error / gap, and energy distance to
    p~ beyond 3 noise floors as a share of the teacher's."""
    rows = result["prompts"].values()
    return {"weight_error": max(r["weight_error_tilted"] for r in rows),
            "reward_error": max(reward_error(r) for r in rows),
            "ed_ratio": max((r["ed_tilted"] - 3 * r["ed_tilted_floor"]) / r["ed_teacher_to_tilted"] for r in rows)}
