import os

import pytest
import torch

from rtdmd.errors import UserError
from rtdmd.train.checkpoint import (
    clean_leftovers,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    select_checkpoint,
)


def test_round_trip_and_latest(tmp_path):
    tensors = {"a/w": torch.randn(3, 4), "b": torch.arange(5)}
    save_checkpoint(tmp_path, 10, tensors, {"step": 10, "x": [1, 2]})
    save_checkpoint(tmp_path, 20, {k: v + 1 for k, v in tensors.items()}, {"step": 20})
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_00000020"
    loaded, state = load_checkpoint(latest)
    assert state["step"] == 20
    torch.testing.assert_close(loaded["a/w"], tensors["a/w"] + 1)
    assert not list(tmp_path.glob(".tmp*"))


def test_damaged_newest_is_an_error_naming_the_intact_one(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, {"step": 1})
    newest = save_checkpoint(tmp_path, 2, {"w": torch.ones(2)}, {"step": 2})
    data = bytearray((newest / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (newest / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"step_00000002 is damaged \(tensors.safetensors does not match its sha256 "
                                        r"in the manifest\); the newest intact one is step_00000001: pass "
                                        r"--checkpoint step_00000001 to use it"):
        latest_checkpoint(tmp_path)
    assert select_checkpoint(tmp_path, "step_1").name == "step_00000001"  # asked for by name: fine
    with pytest.raises(UserError, match="is damaged"):
        load_checkpoint(newest)


def test_half_written_checkpoint_is_ignored(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, {"step": 1})
    # a crash after the files but before the manifest leaves a temporary directory; the step folder appears only
    # by the rename of a complete one
    (tmp_path / ".tmp_step_00000002_123").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    clean_leftovers(tmp_path)  # what the next owner of the run directory does
    assert not list(tmp_path.glob(".tmp*"))


def test_keep_prunes_old(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, {"w": torch.full((1,), float(step))}, {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000003", "step_00000004"]
    assert os.path.exists(tmp_path / "LATEST")


class Killed(BaseException):
    pass


@pytest.mark.parametrize("where, newest", [("2", 1), ("2:renamed", 2)])
def test_crash_during_save_leaves_the_newest_complete_checkpoint(tmp_path, monkeypatch, where, newest):
    # The test hook's SIGKILL is replaced by an exception: the files on disk are what a kill leaves (the real
    # SIGKILL is in test_preemption.py). Before the manifest: step 1 is the newest complete checkpoint; after
    # the rename: step 2 is, although LATEST still names step 1.
    import rtdmd.train.checkpoint as checkpoint

    def kill(pid, signum):
        raise Killed

    monkeypatch.setattr(checkpoint.os, "kill", kill)
    monkeypatch.setenv(checkpoint.CRASH_HOOK, where)
    save_checkpoint(tmp_path, 1, {"w": torch.full((3,), 1.0)}, {"step": 1})
    with pytest.raises(Killed):
        save_checkpoint(tmp_path, 2, {"w": torch.full((3,), 2.0)}, {"step": 2})
    assert (tmp_path / "LATEST").read_text() == "step_00000001"
    assert len(list(tmp_path.glob(".tmp_step_00000002_*"))) == (1 if where == "2" else 0)
    latest = latest_checkpoint(tmp_path)
    tensors, state = load_checkpoint(latest)
    assert latest.name == f"step_{newest:08d}" and state["step"] == newest and tensors["w"][0] == newest
    monkeypatch.delenv(checkpoint.CRASH_HOOK)
    clean_leftovers(tmp_path)  # the next owner of the run directory clears what the crashed save left
    save_checkpoint(tmp_path, 3, {"w": torch.full((3,), 3.0)}, {"step": 3})
    assert not list(tmp_path.glob(".tmp*")) and (tmp_path / "LATEST").read_text() == "step_00000003"
