"""Claim 5 of the study (``studies/shapes.py``): its quick form end to end (two seeds of the demo's pipeline, a few
iterations each, as CI runs it), and its verdicts on hand-made per-seed numbers."""

import json

import pytest
import torch

from studies import shapes
from studies.common import markdown

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("claim5")
    return out, shapes.run(out, quick=True)


def test_quick_form_trains_two_seeds_and_fills_every_row(quick):
    out, claim = quick
    assert claim.number == 5 and "--quick" in claim.command
    statements = [row.statement for row in claim.rows]
    assert any(s.startswith("held-out oracle acceptance") for s in statements)
    assert statements[:4] == ["stage 2 above stage 1 on held-out prompts",
                              "stage 2 above the 50-step CFG teacher by 0.10",
                              "stage 2 keeps 80% of the teacher's within-prompt diversity",
                              "stage 1 as good as before the study (same budget)"]
    assert any("shapes_soft stays a faithful proxy" in s for s in statements)  # the trained differentiable reward
    assert any(s.startswith("no hacking: shapes_soft") for s in statements)
    for row in claim.rows:
        assert all(len(values) == 2 for values in row.arms.values())
        assert row.verdict.startswith(("holds", "does not hold", "reported"))
    # The rows are the seeds' own demo numbers, paired by seed.
    seeds = [json.loads((out / f"seed_{s}" / "metrics.json").read_text()) for s in shapes.QUICK_SEEDS]
    first = claim.rows[0]
    assert first.arms["stage2"] == [m["stage2"]["summary"]["accuracy"] for m in seeds]
    assert first.paired()[0] == pytest.approx(sum(m["summary"]["stage2_minus_stage1"] for m in seeds) / 2)
    assert "## Claim 5" in markdown(claim)
    # The teacher does not depend on the training seed: the second seed reuses the first seed's samples.
    assert seeds[0]["summary"]["teacher_reused_from"] == ""
    assert seeds[1]["summary"]["teacher_reused_from"] == str(out / "seed_0")
    assert seeds[1]["teacher_6"]["summary"] == seeds[0]["teacher_6"]["summary"]


def test_teacher_samples_of_another_configuration_are_refused(quick):
    from rtdmd.errors import UserError

    out, _ = quick
    saved = torch.load(out / "seed_0" / shapes.shapes_demo.TEACHER_FILE, weights_only=True)
    assert shapes.shapes_demo.load_teacher(out / "seed_0", saved["key"]).samples.keys() == saved["samples"].keys()
    with pytest.raises(UserError, match="another configuration"):
        shapes.shapes_demo.load_teacher(out / "seed_0", {**saved["key"], "steps": 50})
    with pytest.raises(UserError, match="not found"):
        shapes.shapes_demo.load_teacher(out, saved["key"])


def test_seeds_already_run_are_read_back_not_retrained(quick):
    out, claim = quick
    stamps = {s: (out / f"seed_{s}" / "metrics.json").stat().st_mtime_ns for s in shapes.QUICK_SEEDS}
    again = shapes.run(out, quick=True)
    assert [r.arms for r in again.rows] == [r.arms for r in claim.rows]
    assert stamps == {s: (out / f"seed_{s}" / "metrics.json").stat().st_mtime_ns for s in shapes.QUICK_SEEDS}
    held, table = shapes.demo_seeds(out, 2)
    assert [r["seed"] for r in table] == [0, 1] and held == sum(r["claims_hold"] for r in table)


def _values(stage1, stage2, teacher, ratio=(1.0,) * 5):
    n = len(stage1)
    return {"_reference": ["teacher_50"], "_trained": [], "stage1_accuracy": list(stage1),
            "stage2_accuracy": list(stage2), "teacher_50_accuracy": list(teacher), "diversity_ratio": list(ratio),
            "hacking_warnings": [0.0] * n}


def test_verdicts_follow_the_issue_thresholds():
    stage1 = [0.64, 0.65, 0.63, 0.66, 0.64]
    holds = shapes.rows(_values(stage1, [0.70, 0.70, 0.67, 0.70, 0.69], [0.52] * 5))
    assert holds[0].verdict.startswith("holds") and "above in 5 of 5 seeds" in holds[0].verdict
    assert holds[1].verdict.startswith("holds") and holds[2].verdict.startswith("holds")
    # One seed far below: the mean gain is still +0.03 but its standard error is not below half of it.
    noisy = shapes.rows(_values(stage1, [0.72, 0.71, 0.67, 0.72, 0.56], [0.52] * 5))
    assert noisy[0].verdict.startswith("does not hold")
    # Above stage 1 in only 3 of 5 seeds.
    three = shapes.rows(_values(stage1, [0.71, 0.71, 0.68, 0.66, 0.64], [0.52] * 5))  # mean +0.036 ± 0.015
    assert three[0].verdict.startswith("does not hold") and "above in 3 of 5" in three[0].verdict
    # Teacher too close; diversity below 80% in one seed.
    close = shapes.rows(_values(stage1, [0.70] * 5, [0.62] * 5, ratio=(1.0, 1.0, 0.79, 1.0, 1.0)))
    assert close[1].verdict.startswith("does not hold") and close[2].verdict.startswith("does not hold")


def test_hacking_is_a_rise_of_the_reward_with_a_significant_fall_of_the_oracle():
    stage1 = [0.64, 0.65, 0.63, 0.66, 0.64]
    values = _values(stage1, stage1, [0.52] * 5)
    values.update({"_trained": ["shapes_soft"], "stage1_shapes_soft": [0.45] * 5,
                   "stage2_shapes_soft": [0.50, 0.51, 0.49, 0.50, 0.52], "stage1_shapes_soft_auc": [0.99] * 5,
                   "stage2_shapes_soft_auc": [0.97, 0.96, 0.99, 0.98, 0.97], "teacher_50_acceptance": [0.38] * 5,
                   "stage1_acceptance": [0.47] * 5, "stage2_acceptance": [0.42, 0.41, 0.43, 0.42, 0.40]})
    by_statement = {row.statement: row for row in shapes.rows(values)}
    assert by_statement["shapes_soft stays a faithful proxy of the oracle after training on it"].verdict.startswith(
        "holds")
    hacked = by_statement["no hacking: shapes_soft rises and the held-out oracle does not fall"]
    assert hacked.verdict.startswith("does not hold (hacked)")
    values["stage2_acceptance"] = [0.50, 0.41, 0.47, 0.52, 0.40]  # a fall within noise
    noisy = {row.statement: row for row in shapes.rows(values)}
    assert noisy["no hacking: shapes_soft rises and the held-out oracle does not fall"].verdict.startswith("holds")
