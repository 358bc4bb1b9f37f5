"""NaN or infinite rewards and losses: the update is skipped on every rank and counted in the logs; after
``run.nonfinite_patience`` consecutive skips of one update the run writes a checkpoint and stops with one line."""

import json
import math

import pytest
import torch
import yaml

from rtdmd import registry
from rtdmd.cli import main
from rtdmd.errors import UserError
from rtdmd.train import align, distill, objectives
from rtdmd.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.tiny import TINY, tiny_config

FLAKY = ["reward.kind=flaky"]


@pytest.fixture(autouse=True)
def flaky_reward(monkeypatch):
    monkeypatch.setitem(registry.KINDS["reward"], "flaky", ("tests.train.flaky_reward", "FlakyConfig", "build"))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    run = tmp_path_factory.mktemp("stage1") / "s1"
    distill.run(tiny_config(), run)
    return run


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def adam_steps(tensors, role):
    """Optimiser steps taken, from AdamW's per-parameter step counters."""
    counts = {float(v) for k, v in tensors.items() if k.startswith(f"optim_{role}/") and k.endswith("/step")}
    assert len(counts) == 1
    return counts.pop()


def test_stage2_skips_nan_and_inf_rewards(stage1, tmp_path):
    # Iterations 2 (a NaN) and 4 (an infinity, the last one) are skipped; the run still ends with its checkpoint.
    run = tmp_path / "s2"
    align.run(tiny_config(*FLAKY, "reward.nan_calls=[2]", "reward.inf_calls=[4]"), run, stage1)
    logged = {r["step"]: r for r in records(run) if "skipped_steps" in r}
    assert [logged[s]["skipped_steps"] for s in (1, 2, 3, 4)] == [0, 1, 1, 2]
    assert logged[2]["reward/total"] == "nan" and logged[4]["reward/total"] == "inf"
    assert math.isfinite(logged[3]["reward/total"]) and "loss/policy" in logged[3] and "loss/policy" not in logged[2]
    tensors, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert state["step"] == 4 and state["skipped_steps"] == 2 and state["updates"] == 2
    assert adam_steps(tensors, "generator") == 2 and adam_steps(tensors, "fake") == 2
    assert all(torch.isfinite(v).all() for v in tensors.values())


def test_stage2_stops_after_patience_with_a_checkpoint(stage1, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY, sort_keys=False))
    run = tmp_path / "s2"
    code = main(["align", str(config), "--from", str(stage1), "--out", str(run), "--set", "reward.kind=flaky",
                 "--set", "reward.always=true", "--set", "run.nonfinite_patience=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("rtdmd: error: 2 consecutive steps had a NaN or infinite reward "
                             "(run.nonfinite_patience=2)")
    assert "checkpoint was written" in err[0] and "--resume" in err[0]
    tensors, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert state["step"] == 2 and state["skipped_steps"] == 2 and state["updates"] == 0
    for key in (k for k in tensors if k.startswith("generator/")):  # nothing was updated
        assert torch.equal(tensors[key], tensors["stage1_generator/" + key.split("/", 1)[1]])
    assert [r["skipped_steps"] for r in records(run) if "skipped_steps" in r] == [1, 2]


def poisoned(monkeypatch, calls):
    """Make the stage-1 generator loss NaN on the given (1-based) calls; returns the call counter."""
    original, count = objectives.DMDLoss.__call__, {"n": 0}

    def loss(*args, **kwargs):
        count["n"] += 1
        value, metrics = original(*args, **kwargs)
        return (value * float("nan") if calls is None or count["n"] in calls else value), metrics

    monkeypatch.setattr(objectives.DMDLoss, "__call__", loss)
    return count


def test_stage1_skips_a_nan_generator_loss(monkeypatch, tmp_path):
    poisoned(monkeypatch, {2})
    distill.run(tiny_config(), tmp_path / "s1")  # 6 fake updates, 3 generator updates
    tensors, state = load_checkpoint(latest_checkpoint(tmp_path / "s1" / "checkpoints"))
    assert state["skipped_steps"] == 1
    assert adam_steps(tensors, "generator") == 2 and adam_steps(tensors, "fake") == 6
    assert all(torch.isfinite(v).all() for v in tensors.values())
    assert [r["skipped_steps"] for r in records(tmp_path / "s1") if "skipped_steps" in r] == [0, 0, 0, 1, 1, 1]


def test_stage1_patience_counts_each_update_separately(monkeypatch, tmp_path):
    # The fake loss stays finite in between; the generator's NaNs still stop the run.
    count = poisoned(monkeypatch, None)
    with pytest.raises(UserError, match="2 consecutive steps had a NaN or infinite generator loss"):
        distill.run(tiny_config("run.nonfinite_patience=2", "distill.iterations=20"), tmp_path / "s1")
    assert count["n"] == 2
    tensors, state = load_checkpoint(latest_checkpoint(tmp_path / "s1" / "checkpoints"))
    assert state["step"] == 4 and adam_steps(tensors, "fake") == 4
    assert "optim_generator/net.0.weight/step" not in tensors  # the generator never took a step


def test_evaluation_with_a_nan_reward_is_a_one_line_error():
    # Without a closed-form tilt the analytic world resamples teacher samples by exp(r / beta): NaN weights.
    from rtdmd.rewards.base import RewardSet, WeightedReward
    from rtdmd.train.components import build_components
    from tests.train.flaky_reward import Flaky, FlakyConfig

    class NoTilt(Flaky):
        def tilt(self, mixture, beta):  # no closed form
            return None

    world = build_components(tiny_config(), torch.device("cpu")).world
    rewards = RewardSet([WeightedReward("flaky", NoTilt(FlakyConfig(always=True)))])
    with pytest.raises(UserError, match="NaN or infinite on teacher samples of prompt 'left'"):
        world.sample_tilted(0, 8, rewards, 1.0, torch.Generator().manual_seed(0))
