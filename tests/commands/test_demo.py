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


def test_the_command_prints_a_claims_table_not_the_summary(monkeypatch, tmp_path, capsys):
    from rtdmd.commands import demo as demo_command
    from rtdmd.demo.common import write_metrics

    claims = {"stage2_beats_teacher_by_0.10": {"value": 0.134, "se": 0.021, "threshold": 0.1, "holds": True},
              "no_reward_hacking_warning": {"value": 1.0, "se": None, "threshold": 0.0, "holds": False,
                                            "at_most": True}}

    def fake_demo(out, config_name, overrides, quick):
        out.mkdir(parents=True)
        write_metrics(out, {"summary": {"a": 1.0}, "claims": claims})
        return {f"number_{i}": float(i) for i in range(60)}

    monkeypatch.setattr(demo_command, "demo_for", lambda kind: fake_demo)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5 and not any("number_" in line for line in printed)
    assert printed[1].split() == ["stage2_beats_teacher_by_0.10", "0.134", "±", "0.021", ">=", "0.1", "yes"]
    assert printed[2].split() == ["no_reward_hacking_warning", "1.000", "<=", "0", "NO"]
    assert printed[3] == "1 of 2 claims hold"


def test_a_demo_without_claims_prints_its_summary_one_number_a_line(tmp_path):
    from rtdmd.commands.demo import final_table

    assert final_table(tmp_path, {"stage1_ed_teacher": 0.123456, "steps": 3}).splitlines() == [
        "stage1_ed_teacher  0.1235", "steps              3"]


def test_the_torchvision_fallback_notice_is_filtered_and_nothing_else():
    """transformers logs "`XImageProcessor` requires torchvision (not installed); falling back to
    `XImageProcessorPil` ..." when diffusers' SD3 module is imported without torchvision; the demo drops exactly
    that notice on the logger that emits it."""
    import inspect
    import logging

    from transformers.utils import import_utils

    from rtdmd.demo.common import TRANSFORMERS_IMPORT_LOGGER, quiet_image_processor_fallback

    assert import_utils.logger.name == TRANSFORMERS_IMPORT_LOGGER  # the logger the notice comes from
    assert "requires torchvision (not installed); falling back to `{pil_name}`" in inspect.getsource(import_utils)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger(TRANSFORMERS_IMPORT_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)  # another test may have quietened transformers (rtdmd plan does)
    logger.addHandler(handler)
    try:
        quiet_image_processor_fallback()
        quiet_image_processor_fallback()  # idempotent
        logger.warning("`SiglipImageProcessor` requires torchvision (not installed); falling back to "
                       "`SiglipImageProcessorPil` for backward compatibility. Install torchvision to use the default "
                       "backend, or import `SiglipImageProcessorPil` directly to silence this warning.")
        logger.warning("`CLIPImageProcessor` requires a newer torchvision")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["`CLIPImageProcessor` requires a newer torchvision"]
