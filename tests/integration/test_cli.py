"""The command line end to end on a tiny analytic world: distill, align, generate, evaluate, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from rtdmd.app.runs import load_run
from rtdmd.app.world_metrics import evaluate_role
from rtdmd.cli import main
from tests.tiny import TINY

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(config_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["distill", str(config_file), "--out", str(root / "s1")]) == 0
    assert main(["align", str(config_file), "--from", str(root / "s1"), "--out", str(root / "s2"),
                 "--set", "preset=exact"]) == 0
    return root


def test_runs_write_config_metrics_and_checkpoints(runs):
    for stage in ("s1", "s2"):
        assert (runs / stage / "config.yaml").is_file()
        records = [json.loads(l) for l in (runs / stage / "metrics.jsonl").read_text().splitlines()]
        assert records and all("step" in r for r in records)
        assert any(k.startswith("eval/") for r in records for k in r)
    saved = yaml.safe_load((runs / "s2" / "config.yaml").read_text())
    assert saved["preset"] == "exact" and saved["align"]["log_prob"] == "gaussian"


def test_generate_is_reproducible(runs, tmp_path):
    args = ["generate", "--run", str(runs / "s2"), "--num", "5", "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--prompt", "right"]) == 0
    a, b = np.load(tmp_path / "a" / "samples.npz"), np.load(tmp_path / "b" / "samples.npz")
    assert a["x"].shape == (15, 2) and list(a["prompt"][:5]) == ["left"] * 5
    assert b["x"].shape == (5, 2) and set(b["prompt"]) == {"right"}
    again = tmp_path / "c"
    assert main(args + ["--out", str(again)]) == 0
    np.testing.assert_array_equal(np.load(again / "samples.npz")["x"], a["x"])


def test_evaluate_writes_metrics(runs, tmp_path):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(runs / "s1"), "--out", str(out), "--num", "50"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["stage"] == "distill" and set(metrics["prompts"]) == {"left", "right", "any"}
    # the run's EMA generator at its last checkpoint, evaluated as the library does it (same seed and size)
    loaded = load_run(runs / "s1")
    direct = evaluate_role(loaded.components, loaded.config, num=50)["summary"]
    assert metrics["summary"] == pytest.approx(direct, rel=1e-9)
    teacher = evaluate_role(loaded.components, loaded.config, num=50, role="teacher")["summary"]
    assert metrics["summary"]["ed_teacher"] != pytest.approx(teacher["ed_teacher"])  # not the teacher's samples


@pytest.mark.parametrize("args, message", [
    (["distill", "{cfg}", "--set", "distill.itrations=3"], "did you mean 'distill.iterations'"),
    (["distill", "missing.yaml"], "not found"),
    (["align", "{cfg}", "--from", "{tmp}/nowhere", "--out", "{tmp}/x"], "not an rtdmd run directory"),
    (["generate", "--run", "{tmp}", "--out", "{tmp}/g"], "not an rtdmd run directory"),
])
def test_user_errors_are_one_line_with_exit_code_2(config_file, tmp_path, args, message):
    args = [a.format(cfg=config_file, tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "rtdmd.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtdmd: error:") and message in lines[0], proc.stderr


def test_existing_run_needs_resume(runs, config_file, capsys):
    assert main(["distill", str(config_file), "--out", str(runs / "s1")]) == 2
    assert "--resume" in capsys.readouterr().err
