"""``rtdmd evaluate`` on an image model: the shipped shapes-world teacher, scored by its rewards."""

import json

import pytest

from rtdmd.cli import main

pytestmark = pytest.mark.integration


def test_teacher_evaluation_writes_images_scores_and_protocol(tmp_path):
    out = tmp_path / "eval"
    code = main(["evaluate", "--config", "shapes/default", "--role", "teacher", "--teacher-steps", "4",
                 "--num", "2", "--reward", "shapes_oracle", "--reward", "shapes_clip", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(l) for l in (out / "scores.jsonl").read_text().splitlines()]
    assert summary["protocol"]["images"] == len(lines) == 2 * summary["protocol"]["prompt_set"]["num_prompts"]
    assert summary["protocol"]["steps"] == 4 and summary["protocol"]["cfg"] == 4.5
    assert summary["protocol"]["seeds"] == [1234, 1235]
    assert {s["name"] for s in summary["scorers"]} == {"shapes_oracle", "shapes_clip"}
    assert all((out / l["file"]).is_file() for l in lines)
    oracle = summary["scores"]["shapes_oracle"]
    assert 0 <= oracle["mean"] <= 1 and set(oracle["per_tag"]) >= {"counting", "position"}


def test_evaluate_needs_a_run_or_a_config(capsys):
    assert main(["evaluate", "--out", "x"]) == 2
    assert "exactly one of --run" in capsys.readouterr().err
    assert main(["evaluate", "--config", "shapes/default", "--out", "x"]) == 2
    assert "--role teacher" in capsys.readouterr().err
