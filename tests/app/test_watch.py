"""The reward-hacking rule of stage 2 (rtdmd.worlds.watch) on hand-made evaluation histories."""

import json

import pytest

from rtdmd.app.watch import HackingRule, RewardHackingWatch, fitted_change, hacking_warning

RULE = HackingRule(window=4, min_drop=0.03)


def test_fitted_change_of_a_line_is_its_rise_and_of_a_blip_is_hand_computed():
    assert fitted_change([0, 10, 20, 30], [1.0, 1.5, 2.0, 2.5]) == pytest.approx(1.5)
    # x = 1..4, y = (.5, .5, .5, .44): Sxy = -0.09, Sxx = 5, slope -0.018, span 3 -> -0.054.
    assert fitted_change([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.44]) == pytest.approx(-0.054)
    assert fitted_change([5, 5], [0.0, 1.0]) == 0.0


def test_warns_when_training_reward_rises_while_held_out_falls():
    steps = [0, 10, 20, 30, 40]
    reward = [None, 1.0, 1.2, 1.4, 1.6]
    held_out = [0.70, 0.70, 0.66, 0.62, 0.58]  # the step-0 point has no training reward and is not fitted
    message = hacking_warning(steps, reward, held_out, RULE, "held-out accuracy")
    assert message is not None
    assert "step 40" in message and "steps 10-40" in message and "held-out accuracy fell by 0.120" in message


@pytest.mark.parametrize("reward, held_out", [
    ([1.0, 1.2, 1.4, 1.6], [0.60, 0.62, 0.64, 0.66]),  # both rise: the good case
    ([1.6, 1.4, 1.2, 1.0], [0.70, 0.66, 0.62, 0.58]),  # both fall: a bad run, not reward hacking
    ([1.0, 1.2, 1.4, 1.6], [0.60, 0.59, 0.60, 0.585]),  # a fall smaller than min_drop (fitted -0.0105)
    ([1.0, 1.0, 1.0, 1.0], [0.70, 0.66, 0.62, 0.58]),  # reward flat: fitted rise 0 is not above min_rise 0
])
def test_no_warning(reward, held_out):
    assert hacking_warning([10, 20, 30, 40], reward, held_out, RULE) is None


def test_needs_a_full_window_and_uses_only_the_last_one():
    assert hacking_warning([10, 20, 30], [1.0, 1.2, 1.4], [0.7, 0.6, 0.5], RULE) is None
    # An early collapse followed by recovery: the last window (steps 20-50) rises, no warning.
    steps, reward = [10, 20, 30, 40, 50], [1.0, 1.1, 1.2, 1.3, 1.4]
    assert hacking_warning(steps, reward, [0.9, 0.5, 0.55, 0.6, 0.65], RULE) is None
    assert hacking_warning(steps, reward, [0.5, 0.9, 0.8, 0.7, 0.6], RULE) is not None
    with pytest.raises(ValueError, match="window"):
        HackingRule(window=1)


def test_watch_reads_training_rewards_between_evaluations_and_records_warnings(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"stage": "distill", "step": 3, "reward/total": 100.0}]  # another stage: ignored
    records += [{"stage": "align", "step": s, "reward/total": float(s), "reward/clip": 2.0 * s} for s in range(1, 9)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    accuracy = {0: 0.7, 2: 0.7, 4: 0.66, 6: 0.62, 8: 0.58}
    echoed = []
    watch = RewardHackingWatch(tmp_path, lambda parts, step: {"accuracy": accuracy[step]}, signal="accuracy",
                               rule=RULE, echo=echoed.append)
    results = [watch(None, step) for step in (0, 2, 4, 6, 8)]
    assert "train_reward/total" not in results[0]
    # Interval (2, 4]: steps 3 and 4 -> mean 3.5 (clip 7.0).
    assert results[2]["train_reward/total"] == 3.5 and results[2]["train_reward/clip"] == 7.0
    assert [r["hacking_warning"] for r in results] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert len(echoed) == 1 and echoed[0].startswith("rtdmd: warning: possible reward hacking at step 8")
    record = watch.record()
    assert record["warnings"][0]["step"] == 8 and record["rule"]["window"] == 4
    assert [h["step"] for h in record["history"]] == [0, 2, 4, 6, 8]
