"""Stage 1 moves toward its target, and pairs every sample with the level it was rolled out to. Short runs on a
1-D analytic world (one Gaussian) whose untrained 4-step generator is far too narrow (std ~0.27 against the
teacher's 0.5): a few dozen AC-DMD iterations must widen it without moving its mean away."""

import pytest

from rtdmd.app.world_metrics import sample_role
from rtdmd.config import resolve
from rtdmd.train import distill, objectives

pytestmark = pytest.mark.integration

ONE_GAUSSIAN = {
    "world": {"kind": "gmm", "components": [{"weight": 1.0, "mean": [1.0], "cov": 0.25}], "prompts": {"a": [0]}},
    "backbone": {"kind": "mlp", "hidden": 32, "depth": 2, "fit_steps": 200, "fit_batch": 256, "fit_points": 5000},
    "reward": {"kind": "linear", "w": [1.0]},
    "distill": {"iterations": 60, "batch_size": 64, "fake_update_ratio": 2, "generator": {"lr": 1e-2},
                "fake": {"lr": 1e-2}, "ema_decay": 0.0, "checkpoint_every": 0, "log_every": 60},
    "run": {"progress": False, "eval_samples": 2000},
}


def test_ac_dmd_moves_the_generator_toward_the_teacher(tmp_path):
    config = resolve(ONE_GAUSSIAN)
    seen = []

    def record(parts, step):
        x = sample_role(parts, config)["a"].double()
        seen.append((x.mean().item(), x.std().item()))
        return {}

    distill.run(config, tmp_path / "s1", evaluate=record)
    (_, std0), (mean1, std1) = seen[0], seen[-1]
    assert std0 < 0.35  # the untrained 4-step CPS generator is too narrow
    assert abs(std1 - 0.5) < 0.5 * abs(std0 - 0.5), seen  # at least half the gap closed
    assert abs(mean1 - 1.0) < 0.3, seen


def test_every_loss_pairs_its_sample_with_the_level_it_was_rolled_out_to(tmp_path, monkeypatch):
    """Whatever the random stop k, the fake-score and DMD losses receive the rollout's own output and sigma_k."""
    rollouts, calls = [], []
    original_rollout = distill.rollout

    def recording_rollout(velocity, x, sigmas, eta, noise=None, cond=None, *, stop=None, **kwargs):
        out = original_rollout(velocity, x, sigmas, eta, noise, cond, stop=stop, **kwargs)
        rollouts.append((out, float(sigmas[stop])))
        return out

    for cls in (objectives.FakeScoreLoss, objectives.DMDLoss):
        original = cls.__call__

        def recording(self, *args, _original=original):
            x_s, s = args[-3], args[-2]
            calls.append((x_s, s))
            return _original(self, *args)

        monkeypatch.setattr(cls, "__call__", recording)
    monkeypatch.setattr(distill, "rollout", recording_rollout)
    distill.run(resolve(ONE_GAUSSIAN, ["distill.iterations=8"]), tmp_path / "s1")
    assert len(calls) == 8 + 4 and len(rollouts) == len(calls)
    assert len({s for _, s in calls}) > 1  # the random stop varied
    for (x_s, s), (out, level) in zip(calls, rollouts):
        assert x_s is out and s == level
