"""Stored-loss regressions: a few iterations of a tiny configuration, every logged loss compared with the values
committed in ``tests/regression_losses.json`` (as torchtune's recipe tests compare to stored loss lists).

A change that alters the arithmetic of a training loop fails here with the first differing metric named. When a
change is *meant* to alter it, regenerate the file with ``RTDMD_WRITE_REGRESSION=1 python -m pytest -q -k
regression`` and say in the commit why the numbers moved.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

STORE = Path(__file__).with_name("regression_losses.json")
KEYS = ("fake_loss", "consistency", "generator_loss", "fake_grad_norm", "generator_grad_norm", "reward/total",
        "advantage_abs", "loss/policy", "loss/dm", "loss/bp", "clip_fraction")


def losses(run_dir: Path, stage: str) -> dict[str, list[float]]:
    """``{metric: [value of every logged step]}`` of the metrics in :data:`KEYS` that ``stage`` logged."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r.get("stage") == stage and r.get("step", 0) > 0]
    return {k: [r.get(k) for r in records] for k in KEYS if any(k in r for r in records)}


def check(name: str, values: dict[str, list[float]], rtol: float = 1e-5, atol: float = 1e-8) -> None:
    stored = json.loads(STORE.read_text()) if STORE.exists() else {}
    if os.environ.get("RTDMD_WRITE_REGRESSION"):
        stored[name] = values
        STORE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        return
    assert name in stored, f"no stored losses for {name!r}: run once with RTDMD_WRITE_REGRESSION=1"
    expected = stored[name]
    assert sorted(values) == sorted(expected), f"{name}: logged metrics {sorted(values)} != {sorted(expected)}"
    for key, series in expected.items():
        assert len(values[key]) == len(series), f"{name}/{key}: {len(values[key])} steps, stored {len(series)}"
        for step, (got, want) in enumerate(zip(values[key], series), 1):
            if want is None or got is None:
                assert got == want, f"{name}/{key} step {step}: {got} != stored {want}"
                continue
            assert math.isclose(got, want, rel_tol=rtol, abs_tol=atol), \
                f"{name}/{key} step {step}: {got!r} != stored {want!r}"
