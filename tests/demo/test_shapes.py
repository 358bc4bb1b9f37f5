"""The shapes world's demo (the default ``rtdmd demo``) end to end at CI size. These check that
the pipeline runs and its report holds sane numbers, not the demo's claims (those need the full run)."""

import json
import re

import pytest
import yaml

from rtdmd.demo import shapes
from rtdmd.errors import UserError
from rtdmd.worlds.shapes import ASSETS

pytestmark = pytest.mark.integration

TAGS = ("single_object", "colors", "counting", "two_object", "color_attr", "position")
FIGURES = ("samples.png", "curves_stage1.png", "curves_stage2.png", "watch.png", "accuracy_by_tag.png", "speed.png")


@pytest.fixture(scope="module")
def shapes_demo(tmp_path_factory):
    """The shapes demo on one held-out prompt per tag, 2 seeds, 2 + 2 iterations, a 10- and 5-step teacher."""
    root = tmp_path_factory.mktemp("shapes_demo")
    rows = [json.loads(line) for line in (ASSETS / "eval.jsonl").read_text().splitlines()]
    held_out = [next(r for r in rows if r["tag"] == tag) for tag in TAGS]
    (root / "held_out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out))
    overrides = [f"world.eval_prompts={root / 'held_out.jsonl'}", "distill.iterations=2", "distill.batch_size=4",
                 "distill.fake_update_ratio=1", "align.iterations=2", "align.prompts_per_iteration=2",
                 "align.group_size=2", "run.eval_every=1", "run.eval_samples=2", "run.progress=false"]
    out = root / "demo"
    summary = shapes.demo(out, "shapes/default", overrides, quick=False, teacher_steps=(10, 5))
    return out, summary, held_out


def test_report_files_exist_and_the_page_links_them(shapes_demo):
    out, _, _ = shapes_demo
    page = (out / "report.html").read_text()
    linked = set(re.findall(r'src="([^"]+)"', page))
    assert linked == set(FIGURES)
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000
    assert "http" not in page  # self-contained: nothing to fetch


def test_metrics_hold_sane_numbers(shapes_demo):
    out, summary, held_out = shapes_demo
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["stage2_accuracy"] == summary["stage2_accuracy"] == metrics["stage2"]["summary"]["accuracy"]
    models = ("teacher_10", "teacher_5", "stage1", "stage2")
    for name in models:
        s, se = metrics[name]["summary"], metrics[name]["se"]
        assert set(metrics[name]["prompts"]) == {r["prompt"] for r in held_out}
        assert 0 <= s["accuracy"] <= 1 and 0 <= se["accuracy"] <= 0.5
        assert {f"accuracy/{t}" for t in TAGS} <= set(s)
        assert s["accuracy"] == pytest.approx(sum(s[f"accuracy/{t}"] for t in TAGS) / len(TAGS))
        assert 0 < s["mean_intensity"] < 1 and 0 <= s["saturation"] <= 1 and 0 < s["color_entropy"] <= 6
        assert s["diversity"] > 0 and {"shapes_clip", "shapes_pref", "reward"} <= set(s)
        assert len(metrics[name]["per_seed"]) == 2
    # Same prompts and seeds for every model: identical batches, so the timings pair up.
    timings = metrics["timings"]
    assert all(len(timings[m]["wall"]) == len(timings["teacher_10"]["wall"]) >= 1 for m in models)
    # 20 network evaluations per image (10 steps x CFG) against 4: the generator must be faster.
    assert summary["speedup_cpu"] > 1.5 and summary["speedup_wall"] > 1
    assert summary["stage2_minus_teacher"] == pytest.approx(
        metrics["stage2"]["summary"]["accuracy"] - metrics["teacher_10"]["summary"]["accuracy"])
    assert summary["stage2_minus_stage1"] == pytest.approx(
        metrics["stage2"]["summary"]["accuracy"] - metrics["stage1"]["summary"]["accuracy"])
    assert summary["stage2_minus_stage1_se"] >= 0
    claims = metrics["claims"]
    trained = {r["name"] for r in yaml.safe_load((out / "stage2" / "config.yaml").read_text())["rewards"]}
    proxies = trained - {"shapes_oracle"}
    assert {"stage1_within_0.05_of_teacher", "stage2_beats_teacher_by_0.10", "stage2_diversity_vs_teacher",
            "stage2_held_out_not_below_stage1", "speedup_4_steps_vs_50_cfg", "no_reward_hacking_warning",
            *(f"stage2_beats_teacher_on_{name}" for name in trained),
            *(f"stage2_{name}_auc_vs_oracle" for name in proxies)} == set(claims)
    assert all(c["holds"] == ((c["value"] <= c["threshold"]) if c.get("at_most") else (c["value"] >= c["threshold"]))
               for c in claims.values() if c["value"] is not None and c["value"] == c["value"])
    assert claims["stage2_diversity_vs_teacher"]["threshold"] == 0.80
    assert claims["no_reward_hacking_warning"]["value"] == summary["hacking_warnings"]
    for name in proxies:  # the trained proxy's AUC against the oracle, on stage 2's own held-out samples
        assert claims[f"stage2_{name}_auc_vs_oracle"]["value"] == metrics["stage2"]["auc_vs_oracle"][name]
    gain = claims["stage2_beats_teacher_by_0.10"]
    assert (gain["value"], gain["se"]) == pytest.approx((summary["stage2_minus_teacher"],
                                                         summary["stage2_minus_teacher_se"]))
    assert claims["stage2_held_out_not_below_stage1"]["se"] == pytest.approx(summary["stage2_minus_stage1_se"])


def test_stage2_is_watched_at_every_evaluation(shapes_demo):
    out, _, _ = shapes_demo
    watch = json.loads((out / "metrics.json").read_text())["watch"]
    history = watch["history"]
    assert [h["step"] for h in history] == [0, 1, 2]
    assert "train_reward/total" not in history[0]
    trained = {r["name"] for r in yaml.safe_load((out / "stage2" / "config.yaml").read_text())["rewards"]}
    for h in history[1:]:
        assert {"train_reward/total", *(f"train_reward/{name}" for name in trained)} <= set(h)
    for h in history:  # held-out: the oracle, image statistics, diversity, every reward trained on or monitored
        assert {"accuracy", "mean_intensity", "saturation", "color_entropy", "diversity", *trained,
                *shapes.MONITORED} <= set(h)
    logged = [json.loads(line) for line in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval/hacking_warning" in r for r in logged) == 3
    # The last evaluation is of the final EMA weights, as is the final evaluation: same seeds, same numbers.
    final = json.loads((out / "metrics.json").read_text())["stage2"]["summary"]
    assert history[-1]["accuracy"] == final["accuracy"]


def test_a_second_demo_into_the_same_directory_is_refused(shapes_demo):
    out, _, _ = shapes_demo
    with pytest.raises(UserError, match="already holds a demo run"):
        shapes.demo(out, "shapes/default", [], quick=False)


def test_monitors_add_the_learned_rewards_at_weight_zero():
    import torch

    from rtdmd.rewards.base import RewardSet, WeightedReward
    from rtdmd.worlds.shapes import ShapesWorldConfig, build
    from rtdmd.worlds.shapes.rewards import ShapesOracleConfig, build_oracle

    world = build(ShapesWorldConfig())
    oracle_only = RewardSet([WeightedReward("shapes_oracle", build_oracle(ShapesOracleConfig()), 1.0, 1.0)])
    rewards = shapes.with_monitors(oracle_only, world, torch.device("cpu"))
    assert rewards.weights == {"shapes_oracle": 1.0, "shapes_clip": 0.0, "shapes_pref": 0.0}
    prompts = world.prompts("eval")
    images = torch.rand(2, 3, 32, 32)
    scores = rewards.score(images, list(prompts.texts[:2]), list(prompts.metadata[:2]))
    assert set(scores) == {"shapes_oracle", "shapes_clip", "shapes_pref"}
    assert torch.equal(rewards.total(scores), scores["shapes_oracle"])  # the training total is unchanged
    # A config that already trains on them gets no duplicates.
    assert shapes.with_monitors(rewards, world, torch.device("cpu")).weights == rewards.weights
