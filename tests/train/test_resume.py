"""Exact resume: N steps uninterrupted equal k steps + resume + (N - k) steps, bit for bit."""

import pytest
import torch

from rtdmd.train import align, distill
from rtdmd.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.tiny import tiny_config

pytestmark = pytest.mark.integration


def final_tensors(run_dir):
    tensors, state = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    return tensors, state


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stage1_resume_is_exact(tmp_path):
    distill.run(tiny_config(), tmp_path / "full")
    distill.run(tiny_config("distill.iterations=3"), tmp_path / "split")
    distill.run(tiny_config(), tmp_path / "split", resume=True)
    full, state = final_tensors(tmp_path / "full")
    split, _ = final_tensors(tmp_path / "split")
    assert state["step"] == 6
    assert any(k.startswith("optim_generator/") for k in full) and any(k.startswith("ema/") for k in full)
    assert_identical(full, split)
    # the metrics log holds each step once
    import json
    steps = [json.loads(l)["step"] for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s > 0 and steps.count(s) == 1] == [1, 2, 3, 4, 5, 6]  # the resumed step 3 too


def test_stage2_resume_is_exact(tmp_path):
    distill.run(tiny_config(), tmp_path / "s1")
    align.run(tiny_config(), tmp_path / "full", tmp_path / "s1")
    align.run(tiny_config("align.iterations=2"), tmp_path / "split", tmp_path / "s1")
    align.run(tiny_config(), tmp_path / "split", tmp_path / "s1", resume=True)
    full, state = final_tensors(tmp_path / "full")
    split, _ = final_tensors(tmp_path / "split")
    assert state["step"] == 4 and any(k.startswith("stage1_generator/") for k in full)
    assert_identical(full, split)


def test_training_changes_the_weights(tmp_path):
    # guards the resume test against a loop that does nothing
    distill.run(tiny_config(), tmp_path / "s1")
    tensors, _ = final_tensors(tmp_path / "s1")
    align.run(tiny_config(), tmp_path / "s2", tmp_path / "s1")
    after, _ = final_tensors(tmp_path / "s2")
    moved = [k for k in after if k.startswith("generator/")
             and not torch.equal(after[k], after["stage1_generator/" + k.split("/", 1)[1]])]
    assert moved
    assert not torch.equal(tensors["generator/net.0.weight"], tensors["ema/net.0.weight"])
