"""Two CPU processes (gloo) against one, on the tiny analytic config: both stages, ddp and fsdp.

One two-process job (``dist_worker.py``) runs every scenario once; the tests read what it wrote.

Tolerance of "two processes equal one": each rank averages the gradients of its half of the global batch and
the two halves are averaged (ddp: all-reduce; fsdp: reduce-scatter), where one process averages the whole
batch at once; the draws are the same (keyed by global sample index), so the runs differ only by float32
round-off in the order of the sums. Measured: at most 6e-8 after 6 + 4 steps. We require
``|a - b| <= 1e-6 + 1e-5 |b|`` for every tensor of the final checkpoints (weights, Adam moments, EMA), while
the same runs move the weights by more than 1e-3 (checked, so the comparison has power).
"""

import json
import shutil
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rtdmd.train.checkpoint import CRASH_HOOK, latest_checkpoint, load_checkpoint
from rtdmd.train.lock import LOCK_FILE
from tests.tiny import TINY
from tests.train.dist_worker import DISTRIBUTED, train
from tests.train.multiprocess import Job

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]

ATOL, RTOL = 1e-6, 1e-5
STRATEGIES = ("ddp", "fsdp")
STAGES = ("s1", "s2")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    job = Job(["-m", "tests.train.dist_worker", str(out)], 2, out / "logs")
    assert job.wait(timeout=600) == [0, 0], job.report()
    return out


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    train("s1", out=out / "s1")
    train("s2", out=out / "s2", start=out / "s1")
    return out


def final(run_dir):
    tensors, state = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    return tensors, state


def assert_close(a, b, atol=ATOL, rtol=RTOL):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=rtol, msg=key)


def movement(tensors, stage):
    """How far training moved the weights: generator vs its EMA (stage 1), vs the stage-1 start (stage 2)."""
    start = "ema" if stage == "s1" else "stage1_generator"
    return max((tensors[k] - tensors[f"{start}/{k.split('/', 1)[1]}"]).abs().max().item()
               for k in tensors if k.startswith("generator/"))


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_parameters_identical_on_every_rank(two, strategy):
    saved = sorted((two / "saved").glob(f"{strategy}_*_rank0.safetensors"))
    assert len(saved) == 10  # s1, s2, the two halves of s1_split and s2_split, s1_nan, s1_term, sd3_s1, sd3_s2
    for rank0 in saved:
        a, b = load_file(rank0), load_file(str(rank0).replace("_rank0", "_rank1"))
        assert a.keys() == b.keys() and any(k.startswith("optim_generator/") for k in a)
        for key in a:
            assert torch.equal(a[key], b[key]), (rank0.name, key)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_processes_equal_one(two, one, strategy, stage):
    a, state = final(two / strategy / stage)
    b, _ = final(one / stage)
    assert state["world_size"] == 2 and state["step"] == (6 if stage == "s1" else 4)
    assert_close(a, b)
    assert movement(b, stage) > 1e-3
    # The logged metrics are global means too (losses, gradient norms, rewards, advantages), and the evaluations
    # of the EMA generator during training agree.
    assert_same_metrics(two / strategy / stage, one / stage)


def assert_same_metrics(run_a, run_b):
    logged_a, logged_b = metrics(run_a), metrics(run_b)
    assert [r["step"] for r in logged_a] == [r["step"] for r in logged_b]
    assert any(k.startswith("eval/") for r in logged_b for k in r)
    for ra, rb in zip(logged_a, logged_b):
        assert ra.keys() == rb.keys()
        for key, value in rb.items():
            if isinstance(value, float) and not key.endswith("seconds"):
                assert ra[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (ra["step"], key)


@pytest.mark.parametrize("stage", (*STAGES, "s1_nan"))
def test_fsdp_equals_ddp(two, stage):
    assert_close(final(two / "fsdp" / stage)[0], final(two / "ddp" / stage)[0])
    assert_same_metrics(two / "fsdp" / stage, two / "ddp" / stage)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_nan_loss_is_skipped_on_every_rank(two, strategy):
    tensors, state = final(two / strategy / "s1_nan")
    assert state["skipped_steps"] == 1
    steps = {float(v) for k, v in tensors.items() if k.startswith("optim_generator/") and k.endswith("/step")}
    assert steps == {2.0}  # 3 generator updates, the second skipped
    assert all(torch.isfinite(v).all() for v in tensors.values())


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_process_resume_is_exact(two, strategy, stage):
    full, split = final(two / strategy / stage)[0], final(two / strategy / f"{stage}_split")[0]
    assert full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key
    steps = [r["step"] for r in metrics(two / strategy / f"{stage}_split") if "fake_loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == (6 if stage == "s1" else 4)


def test_checkpoint_of_two_processes_resumes_on_one(two, one, tmp_path):
    # fsdp gathers full tensors into checkpoints: a sharded run's checkpoint continues on another world size.
    run = tmp_path / "continued"
    shutil.copytree(two / "fsdp" / "s1_half", run)
    half, state = final(run)
    assert state["step"] == 3 and state["world_size"] == 2
    assert all(half[k].shape == v.shape for k, v in final(one / "s1")[0].items())
    train("s1", out=run, resume=True)
    assert_close(final(run)[0], final(one / "s1")[0])


def draws(two, rank, run):
    return torch.load(two / f"draws_rank{rank}.pt")[run]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stage1_stops_shared_noise_distinct(two, strategy):
    for run in (f"{strategy}/s1", f"{strategy}/s1_split"):
        rank0, rank1 = draws(two, 0, run), draws(two, 1, run)
        assert len(rank0) == len(rank1) == 9  # 6 fake-score + 3 generator rollouts (evaluation samples elsewhere)
        assert [d["stop"] for d in rank0] == [d["stop"] for d in rank1]
        assert len({d["stop"] for d in rank0}) > 1  # the random stop varies between iterations
        for d0, d1 in zip(rank0, rank1):
            rows = torch.cat([d0["x_init"], d1["x_init"]])
            assert len(rows) == 16 and len(torch.unique(rows, dim=0)) == 16  # 16 distinct samples


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stage2_subsets_agree_and_group_noise_is_shared(two, strategy):
    rank0, rank1 = draws(two, 0, f"{strategy}/s2"), draws(two, 1, f"{strategy}/s2")
    assert len(rank0) == len(rank1) == 4
    subsets = set()
    for d0, d1 in zip(rank0, rank1):
        assert d0["indices"] == list(range(6)) and d1["indices"] == list(range(6, 12))
        assert d0["trained"] == d1["trained"]
        subsets.add(tuple(d0["trained"]))
        assert len(torch.unique(torch.cat([d0["x_init"], d1["x_init"]]), dim=0)) == 12
        group = torch.arange(12) // 4  # group 1 = samples 4, 5 (rank 0) and 6, 7 (rank 1)
        for step in range(3):
            z = torch.cat([d0["noises"][step], d1["noises"][step]])
            same = (z[:, None] == z[None, :]).all(-1)
            if step in d0["trained"]:
                assert torch.equal(same, torch.eye(12, dtype=torch.bool)), step  # every sample its own noise
            else:
                assert torch.equal(same, group[:, None] == group[None, :]), step  # one noise per group
    assert len(subsets) > 1  # the subset changes between iterations


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sigterm_to_one_rank_stops_both_after_the_same_iteration(two, strategy):
    run = two / strategy / "s1_term"
    # Both ranks report the stop (rank 0 received nothing itself), after iteration 3, with one checkpoint of it.
    assert [json.loads((run / f"stopped_rank{r}.json").read_text()) for r in (0, 1)] == [signal.SIGTERM] * 2
    tensors, state = final(run)
    assert state["step"] == 3 and latest_checkpoint(run / "checkpoints").name == "step_00000003"
    assert metrics(run)[-1] == {"stage": "distill", "step": 3, "stopped_by_signal": "SIGTERM"}
    # ... and up to there it is the uninterrupted run: same draws, so the same first 3 steps as s1_split's half.
    half, _ = final(two / strategy / "s1_half")
    for key in tensors:
        assert torch.equal(tensors[key], half[key]), key


@pytest.mark.parametrize("stage", ("sd3_s1", "sd3_s2"))
def test_fsdp_equals_ddp_on_a_lora_backbone(two, stage):
    # A tiny SD3 pipeline: the roles are LoRA adapters on one transformer, which fsdp shards block by block
    # (stage 2: frozen stage-1 adapters plus fresh ones, one generator micro-batch per sample). Tolerance: Adam
    # moves a weight by at most lr = 1e-3 per step, in a direction computed from gradients with cancellations
    # (group-normalised advantages); round-off changes that direction by well under 1% (measured: 4e-6 after
    # 3 + 2 steps), so 2e-5, against a movement of more than 1e-3 (checked).
    ddp, fsdp = final(two / "ddp" / stage)[0], final(two / "fsdp" / stage)[0]
    assert any(".lora_A." in k for k in ddp) and any(k.startswith("optim_fake/") for k in ddp)
    assert_close(fsdp, ddp, atol=2e-5, rtol=0)
    assert max((ddp[k] - ddp[f"ema/{k.split('/', 1)[1]}"]).abs().max().item()
               for k in ddp if k.startswith("generator/")) > 1e-3


def test_sigkill_of_rank0_while_writing_a_checkpoint_resumes_exactly(two, tmp_path):
    # Two ranks through the command line; rank 0 (the only writer) is killed while checkpoint 4 is half written
    # (rank 1 then fails in its next collective). The lock it held is stale: a two-rank --resume takes the run
    # over and ends bit for bit where the uninterrupted two-process run ends (ddp/s1: the same config).
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))  # key order = prompt order
    sets = [a for item in (*DISTRIBUTED, "run.parallel=ddp", "distill.checkpoint_every=2") for a in ("--set", item)]
    args = ["-m", "rtdmd.cli", "distill", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"), *sets]
    killed = Job(args, 2, tmp_path / "killed", env={CRASH_HOOK: "4"})
    assert killed.wait(timeout=300)[0] == -signal.SIGKILL, killed.report()
    assert (tmp_path / "run" / LOCK_FILE).exists()
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_00000002"
    resumed = Job([*args, "--resume"], 2, tmp_path / "resumed")
    assert resumed.wait(timeout=300) == [0, 0], resumed.report()
    assert "no longer running; taking it over" in resumed.output(0)
    (full, _), (split, state) = final(two / "ddp" / "s1"), final(tmp_path / "run")
    assert full.keys() == split.keys() and state["step"] == 6
    for key in full:
        assert torch.equal(full[key], split[key]), key

@pytest.mark.parametrize("family", ["sd3", "flux1_dev"])
def test_checkpointed_gradients_under_fsdp(two, folders, family):
    # Both ranks run the same samples, so FSDP's averaged gradients are one process's gradients up to the
    # round-off of the reduce-scatter; checkpointing recomputes with the same kernels (see
    # tests/backbones/test_checkpointing.py for the tolerance).
    from tests.backbones.conftest import build
    from tests.backbones.test_checkpointing import prepare, role_switching_grads

    one = build(family, folders[family])
    prepare(one, stage2=True)
    expected = role_switching_grads(one)
    for rank in (0, 1):
        plain = load_file(two / "checkpointing" / f"{family}_plain_rank{rank}.safetensors")
        checkpointed = load_file(two / "checkpointing" / f"{family}_checkpointed_rank{rank}.safetensors")
        assert plain.keys() == checkpointed.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-6, atol=1e-9, msg=key)
            torch.testing.assert_close(checkpointed[key], expected[key], rtol=1e-5, atol=1e-8, msg=key)
