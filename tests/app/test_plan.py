"""``rtdmd plan``: the memory tracker counts what a hand computation gives; the planned iterations make the model
calls the loops make; the planned peak agrees with the CPU allocator's on a real run; the command reports and
fails in one line. (The published recipes are planned by ``python -m benchmarks.recipe_plans``, minutes each;
benchmarks/plan_check.py compares planned and measured peaks on more configurations.)"""

from collections import Counter

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks.counting import (
    CallLog,
    CountingBackbone,
    counting_rewards,
    instrumented,
)
from benchmarks.plan_check import measured_runs
from rtdmd.app.plan import iteration
from rtdmd.app.plan.planner import Planner
from rtdmd.app.plan.report import fewest_gpus, parse_memory
from rtdmd.app.plan.tracker import MemoryTracker
from rtdmd.cli import main
from rtdmd.errors import UserError
from rtdmd.train import align, distill, objectives
from rtdmd.train.components import build_components
from tests.backbones.image_reward import registered
from tests.backbones.test_stages import write_config
from tests.tiny import tiny_config

TOLERANCE = 0.15


def test_tracker_counts_each_storage_once_while_it_lives():
    before = torch.empty(100)  # a real tensor: its views are not tracked
    sigmas = torch.tensor([1.0, 0.25])  # a real constant: computations on it run for real
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        known = torch.empty(1000)  # declared pre-existing: never counted
        undeclared = torch.empty(100)  # pre-existing too: its views are not new memory
    tracker = MemoryTracker([known])
    with mode, tracker:
        a = torch.empty(250)  # 1000 bytes
        view = a.view(25, 10)  # the same storage
        b = a * 2  # 2000
        known.add_(1)  # in place on a known storage
        undeclared.view(10, 10)
        before.view(10, 10)
        del a, view  # 1000
        c = torch.empty(500)  # 3000: the peak
        tracker.tag(c, "gradients")
        del b, c
        d = torch.empty(1)  # 4
        assert float(sigmas[1]) == 0.25  # a real computation, not a neutral answer
        assert float(d.sum()) == 0.0 and bool(torch.isfinite(d).all())  # fake data: neutral answers
        del d
    assert tracker.peak == 3000 and tracker.peak_split == {"activations": 1000, "gradients": 2000}
    assert tracker.current == 0


def tally(log: CallLog) -> Counter:
    return Counter((c.kind, c.name, c.grad, c.rows) for c in log.calls)


@pytest.mark.parametrize("stage", ["distill", "align"])
def test_planned_iteration_makes_the_loops_model_calls(stage, tmp_path):
    config = tiny_config("distill.iterations=1", "distill.fake_update_ratio=1", "align.iterations=1")
    loop = CallLog()
    if stage == "distill":
        with instrumented(loop):
            distill.run(config, tmp_path / "s1")
    else:
        distill.run(config, tmp_path / "s1")
        with instrumented(loop):
            align.run(config, tmp_path / "s2", tmp_path / "s1")
    parts = build_components(config, torch.device("cpu"))
    planned = CallLog()
    backbone, rewards = CountingBackbone(parts.backbone, planned), counting_rewards(parts.rewards, planned)
    cfg = getattr(config, stage)
    state = Planner(config)._train_state(parts.backbone, stage)
    sigmas = backbone.generator_sigmas(cfg.step_list)
    names = parts.world.prompt_names
    if stage == "distill":
        texts = [names[j % len(names)] for j in range(cfg.batch_size)]
        iteration.distill_iteration(backbone, state, objectives.stage1(cfg), cfg, texts, sigmas, "cpu", stop=2)
        # The loop's random stops differ per rollout: the rollouts without gradient take k_fake + k_gen - 1
        # generator passes, the planned ones 2 k - 1 = 3.
        rollout = ("velocity", "generator", False, cfg.batch_size)
        expected, got = tally(loop), tally(planned)
        assert got.pop(rollout) == 3 and expected.pop(rollout) >= 1
    else:
        backbone.start_stage2()
        texts = [names[j // cfg.group_size % len(names)] for j in range(cfg.samples_per_iteration)]
        iteration.align_iteration(backbone, rewards, state, objectives.stage2(cfg, config.beta, rewards), cfg, texts,
                                  [{} for _ in texts], sigmas, "cpu")
        expected, got = tally(loop), tally(planned)
    assert got == expected and sum(got.values()) > 3


def test_parse_memory_and_the_fewest_gpus():
    assert parse_memory("80GiB") == 80 * 2**30 and parse_memory("40GB") == 40 * 10**9 and parse_memory("24") == 24 * 2**30
    with pytest.raises(UserError, match="--gpu-memory '80 apples' is not a size"):
        parse_memory("80 apples")

    class Plan:
        def __init__(self, gpus):
            self.gpus, self.needed = gpus, 100 / gpus

    asked = []
    plan_at = lambda n: asked.append(n) or Plan(n)
    assert fewest_gpus(plan_at, [1, 2, 3, 4, 6, 12], memory=30).gpus == 4  # 100/3 > 30 * 0.95 >= 25
    assert len(asked) <= 3  # a binary search
    assert fewest_gpus(plan_at, [1, 2], memory=10) is None


@pytest.fixture(scope="module")
def tiny_sd3(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_sd3")
    return write_config(root, "sd3", folders["sd3"]), root


@pytest.mark.integration
def test_planned_peak_agrees_with_the_allocator(tiny_sd3):
    """Stage 1 of the tiny SD3 pipeline with activation checkpointing: what the training loop allocates above what
    existed when it started (the allocator's account, torch's profiler) against the planned optimizer state,
    gradients and activations (benchmarks/plan_check.py compares whole peaks on more configurations)."""
    from rtdmd.config import load_config

    config_file, root = tiny_sd3
    overrides = ["run.activation_checkpointing=true", "distill.iterations=2", "distill.fake_update_ratio=1"]
    with registered():
        config = load_config(config_file, overrides)
        measured = measured_runs(config, root / "runs", stages=("distill",)).increment["distill"]
        plan = Planner(config).plan("distill", 1)
    planned = plan.terms["optimizer"] + plan.terms["gradients"] + plan.terms["activations"]
    assert abs(planned / measured - 1) <= TOLERANCE, (planned, measured)


@pytest.mark.integration
def test_plan_command_reports_and_refuses_in_one_line(tiny_sd3, capsys):
    config_file, _ = tiny_sd3
    with registered():
        assert main(["plan", str(config_file), "--gpus", "1", "--stage", "distill", "--gpu-memory", "1GiB"]) == 0
        out = capsys.readouterr().out
        assert "| activations |" in out and "fits, headroom" in out and "fewest GPUs: 1" in out
        assert main(["plan", str(config_file), "--gpus", "3"]) == 2  # distill.batch_size 2
        assert main(["plan", str(config_file), "--gpu-memory", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not divisible by --gpus 3" in err[0] and "is not a size" in err[1]
