"""``rtdmd demo`` through the CLI: world selection, its one-line user errors, and the analytic world's demo end to
end at CI size (the shapes world's demo is tested at CI size in tests/demo/test_shapes.py)."""

import json

import pytest
import yaml

from rtdmd.cli import main
from tests.tiny import TINY

pytestmark = pytest.mark.integration


def test_analytic_world_demo_through_the_cli(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY, sort_keys=False))
    out = tmp_path / "gmm"
    assert main(["demo", "--config", str(config), "--out", str(out), "--set", "run.eval_samples=200"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["summary"]
    # the summary is the final evaluation of the stage-1 generator, and stage 1 starts farther from the teacher
    # than two teacher sample sets are from each other
    assert summary["stage1_ed_teacher"] == metrics["stage1"]["summary"]["ed_teacher"]
    assert summary["untrained_ed_teacher"] > summary["ed_floor"]
    assert (out / "samples.png").is_file() and 'src="samples.png"' in (out / "report.html").read_text()


def test_world_and_config_together_are_refused(tmp_path, capsys):
    assert main(["demo", "--world", "gmm", "--config", "gmm/default", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not both" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_world_without_a_demo_is_a_user_error(tmp_path, capsys):
    # The SD3 recipe's world is a prompt list: it has a config but no demo.
    assert main(["demo", "--config", "recipes/sd3m", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'prompts' world, which has no demo" in err and "--world shapes or --world gmm" in err


def test_the_default_world_is_shapes(monkeypatch, tmp_path):
    from rtdmd import demo

    monkeypatch.setitem(demo.DEMOS, "shapes", "tests.commands.test_demo")
    RECORDED.clear()
    assert main(["demo", "--out", str(tmp_path / "d"), "--quick", "--set", "run.seed=3"]) == 0
    (out, name, overrides, quick), = RECORDED
    assert (name, overrides, quick) == ("shapes/default", ["run.seed=3"], True) and out == tmp_path / "d"


RECORDED = []


def demo(out, config_name, overrides, quick):
    """A stand-in demo that records its arguments (the CLI's dispatch is what is tested here)."""
    RECORDED.append((out, config_name, overrides, quick))
    return {"recorded": True}
