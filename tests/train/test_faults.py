"""Fault injection on run directories and checkpoints (issue 14), in this process on the tiny analytic world.

Each case does what an outside user did (damage a checkpoint, rerun in the same folder, point stage 2 at an
unfinished stage 1, fill the disk, ...) and asserts the outcome the issue asks for: one line
``rtdmd: error: ...`` naming the problem and the fix with exit code 2 (never a traceback), nothing lost (the
checkpoint folders byte for byte as before), nothing mixed (metrics steps once, outputs that name the checkpoint
they came from), no silent fallback to another checkpoint. Cases that need two processes (two runs on one
folder, a stale lock after SIGKILL, two ranks) are in ``test_faults_processes.py``; the reward server's in
``tests/rewards/test_server_limits.py``; the list with counts in docs/training.md.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import yaml

import rtdmd.train.checkpoint as checkpoint_module
from rtdmd import registry
from rtdmd.cli import main
from rtdmd.errors import UserError
from rtdmd.train import align, distill
from rtdmd.train.checkpoint import (
    CRASH_HOOK,
    LATEST,
    checkpoint_digest,
    is_complete,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rtdmd.train.lock import LOCK_FILE, RunLock
from tests.tiny import TINY, tiny_config

pytestmark = pytest.mark.integration

EVERY2 = "distill.checkpoint_every=2"


# -- helpers ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished stage 1 (checkpoints at steps 4 and 6; 2 was pruned) and a finished stage 2 from it."""
    root = tmp_path_factory.mktemp("faults")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    distill.run(tiny_config(EVERY2), root / "s1")
    align.run(tiny_config(), root / "s2", root / "s1")
    return root


@pytest.fixture
def runs(base, tmp_path):
    """A private copy of the base runs (tests damage them)."""
    for name in ("s1", "s2"):
        shutil.copytree(base / name, tmp_path / name)
    shutil.copy(base / "tiny.yaml", tmp_path / "tiny.yaml")
    return tmp_path


@pytest.fixture
def no_model(monkeypatch):
    """Building a backbone or a reward fails: a check that came after the model loads shows up as a failure.
    (Worlds may be built: they are files and closed forms.)"""
    build = registry.builder

    def builder(section, kind):
        if section != "world":
            raise AssertionError(f"a {section} was built before the input was checked")
        return build(section, kind)

    monkeypatch.setattr(registry, "builder", builder)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtdmd: error: ") and "Traceback" not in err, err
    return lines[0]


def files(run_dir):
    """Every file under ``run_dir/checkpoints`` with its bytes: "nothing lost" is this, unchanged."""
    root = run_dir / "checkpoints"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flip(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "flipped byte in the tensors": lambda d: flip(d / "tensors.safetensors"),
    "truncated tensors": lambda d: (d / "tensors.safetensors").write_bytes(
        (d / "tensors.safetensors").read_bytes()[:1000]),
    "deleted manifest": lambda d: (d / "manifest.json").unlink(),
    "flipped byte in state.json": lambda d: flip(d / "state.json", 0.3),
}
SEEN_AS = {"flipped byte in the tensors": "tensors.safetensors does not match its sha256",
           "truncated tensors": "tensors.safetensors is truncated or overwritten",
           "deleted manifest": "it has no manifest.json",
           "flipped byte in state.json": "state.json does not match its sha256"}


def step_dir(run_dir, step):
    return run_dir / "checkpoints" / f"step_{step:08d}"


# -- reproduction 1: a fresh run in a folder of damaged checkpoints ----------------------------------------------

def test_fresh_run_never_deletes_or_mixes_checkpoints(runs, capsys):
    s1 = runs / "s1"
    for step in (4, 6):
        flip(step_dir(s1, step) / "tensors.safetensors")
    before = files(s1)
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", s1, "--resume", "--set", EVERY2)
    line = one_line(err)
    assert code == 2 and "--resume: every checkpoint in" in line and "step_00000004 (tensors.safetensors" in line
    # "start afresh" in the same --out: refused (it used to finish and prune its own new checkpoints)
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", s1, "--set", EVERY2)
    assert code == 2 and "holds only damaged checkpoints" in one_line(err) and "use another --out" in err
    assert files(s1) == before


def test_pruning_keeps_the_newest_complete_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save_checkpoint(root, step, {"w": torch.full((2,), float(step))}, {"step": step}, keep=0)
    flip(root / "step_00000003" / "tensors.safetensors")  # damaged: never counted, never deleted
    save_checkpoint(root, 9, {"w": torch.zeros(2)}, {"step": 9}, keep=0)  # a newer folder (another run's)
    save_checkpoint(root, 4, {"w": torch.full((2,), 4.0)}, {"step": 4}, keep=2)
    names = sorted(p.name for p in root.glob("step_*"))
    assert names == ["step_00000002", "step_00000003", "step_00000004", "step_00000009"]
    assert (root / LATEST).read_text() == "step_00000004" and is_complete(root / "step_00000004")
    assert is_complete(root / "step_00000002")  # the newest complete one before the new one


# -- reproduction 3: a damaged newest checkpoint is never skipped silently ---------------------------------------

@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_newest_checkpoint_is_an_error_for_every_reader(runs, capsys, no_model, damage):
    s1 = runs / "s1"
    DAMAGES[damage](step_dir(s1, 6))
    before = files(s1)
    expect = f"step_00000006 is damaged ({SEEN_AS[damage]}"
    for args, option in [(["generate", "--run", s1, "--out", runs / "g"], "--checkpoint"),
                         (["evaluate", "--run", s1, "--out", runs / "e.json"], "--checkpoint"),
                         (["export", "--run", s1, "--out", runs / "x"], "--checkpoint"),
                         (["align", runs / "tiny.yaml", "--from", s1, "--out", runs / "a"], "--from-checkpoint")]:
        code, out, err = cli(capsys, *args)
        line = one_line(err)
        assert code == 2 and expect in line, line
        assert f"the newest intact one is step_00000004: pass {option} step_00000004 to use it" in line
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", s1, "--resume")
    assert code == 2 and expect in one_line(err) and "move the damaged one out of" in err
    assert files(s1) == before
    assert not any((runs / name).exists() for name in ("g", "e.json", "x", "a"))


def test_an_older_checkpoint_only_when_asked_and_outputs_name_it(runs, capsys):
    s1 = runs / "s1"
    flip(step_dir(s1, 6) / "tensors.safetensors")
    code, out, _ = cli(capsys, "generate", "--run", s1, "--checkpoint", "step_4", "--out", runs / "g", "--num", "2")
    assert code == 0 and "from step_00000004" in out
    samples = np.load(runs / "g" / "samples.npz")
    assert (str(samples["checkpoint"]), int(samples["step"]), str(samples["stage"])) == ("step_00000004", 4, "distill")
    assert str(samples["checkpoint_sha256"]) == checkpoint_digest(step_dir(s1, 4)) and str(samples["run"]) == str(s1)
    code, _, _ = cli(capsys, "evaluate", "--run", s1, "--checkpoint", "4", "--out", runs / "e.json", "--num", "20")
    record = json.loads((runs / "e.json").read_text())
    assert code == 0 and (record["checkpoint"], record["step"]) == ("step_00000004", 4)
    assert record["checkpoint_sha256"] == checkpoint_digest(step_dir(s1, 4)) and record["run_finished"] is True


def test_align_from_an_explicit_stage1_checkpoint_records_it(runs, capsys):
    code, _, err = cli(capsys, "align", runs / "tiny.yaml", "--from", runs / "s1", "--from-checkpoint", "step_4",
                       "--out", runs / "a", "--set", "align.iterations=1")
    assert code == 0, err
    origin = json.loads((runs / "a" / "run.json").read_text())
    assert (origin["from_checkpoint"], origin["from_step"], origin["finished"]) == ("step_00000004", 4, True)
    assert origin["from_sha256"] == checkpoint_digest(step_dir(runs / "s1", 4))
    # the stage-1 tensors in its checkpoint are those of step 4, not of the newest (step 6)
    tensors, _ = load_checkpoint(latest_checkpoint(runs / "a" / "checkpoints"))
    stage1, _ = load_checkpoint(step_dir(runs / "s1", 4))
    assert all(torch.equal(tensors[f"stage1_generator/{k[4:]}"], v) for k, v in stage1.items() if k.startswith("ema/"))


# -- reproduction 5: stage 2 and an unfinished or different stage 1 ----------------------------------------------

def sigterm_at(step):
    """An evaluation hook that sends this process SIGTERM at ``step`` (a preemption in the middle of a run)."""
    def hook(parts, at):
        if at == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}
    return hook


def test_stage2_refuses_a_preempted_stage1_unless_asked(tmp_path, capsys):
    result = distill.run(tiny_config("run.eval_every=1"), tmp_path / "s1", evaluate=sigterm_at(2))
    assert result["stopped_by_signal"] == signal.SIGTERM  # after the iteration that follows the signal
    record = json.loads((tmp_path / "s1" / "run.json").read_text())
    assert (record["finished"], record["stopped_by"], record["step"]) == (False, "SIGTERM", 3)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    args = ["align", tmp_path / "tiny.yaml", "--from", tmp_path / "s1", "--out", tmp_path / "s2"]
    code, _, err = cli(capsys, *args)
    line = one_line(err)
    assert code == 2 and "did not finish (stopped by SIGTERM after step 3 of 6)" in line
    assert "--resume', or pass --allow-unfinished" in line and not (tmp_path / "s2").exists()
    code, _, err = cli(capsys, *args, "--allow-unfinished", "--set", "align.iterations=1")
    assert code == 0, err
    assert json.loads((tmp_path / "s2" / "run.json").read_text())["from_step"] == 3


def test_stage2_refuses_a_stage1_that_is_still_running(runs, capsys):
    record = json.loads((runs / "s1" / "run.json").read_text())
    (runs / "s1" / "run.json").write_text(json.dumps({**record, "finished": False}))
    lock = RunLock(runs / "s1")
    lock.acquire()  # as the stage-1 process holds it while it trains
    try:
        code, _, err = cli(capsys, "align", runs / "tiny.yaml", "--from", runs / "s1", "--out", runs / "s2b")
        assert code == 2 and f"it is still running: PID {os.getpid()}" in one_line(err)
    finally:
        lock.release()


def test_align_resume_with_another_from_is_refused(runs, capsys, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs / "s1", other)
    before = files(runs / "s2")
    code, _, err = cli(capsys, "align", runs / "tiny.yaml", "--from", other, "--out", runs / "s2", "--resume",
                       "--set", "align.iterations=6")
    line = one_line(err)
    recorded = json.loads((runs / "s2" / "run.json").read_text())["from"]
    assert code == 2 and f"started from the stage-1 run {recorded}, not from --from {other}: pass --from" in line
    assert files(runs / "s2") == before


def test_align_resume_keeps_its_stage1_tensors_when_stage1_moved_on(base, tmp_path):
    # Stage 2 runs 2 of 4 iterations; stage 1 is then continued (its newest checkpoint changes); stage 2 resumes:
    # it continues from the stage-1 tensors stored in its own checkpoint and ends exactly where an uninterrupted
    # stage 2 from the original stage 1 ends.
    s1 = tmp_path / "s1"
    shutil.copytree(base / "s1", s1)
    align.run(tiny_config("align.iterations=2"), tmp_path / "split", s1)
    distill.run(tiny_config(EVERY2, "distill.iterations=8"), s1, resume=True)
    align.run(tiny_config(), tmp_path / "split", s1, resume=True)
    full, _ = load_checkpoint(latest_checkpoint(base / "s2" / "checkpoints"))
    split, state = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    assert state["step"] == 4 and full.keys() == split.keys()
    assert all(torch.equal(full[k], split[k]) for k in full)


# -- run directories: the lock, reruns, stale owners ---------------------------------------------------------------

def test_lock_is_released_after_an_error_and_an_empty_folder_removed(runs, capsys):
    fresh = runs / "never"
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", fresh, "--resume")
    assert code == 2 and "--resume: no checkpoint in" in one_line(err)
    assert not fresh.exists()  # the lock created it, and removed it with the lock
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "s1", "--set", "distill.eta=0.5")
    assert code == 2 and "already holds checkpoints (newest: step_00000006)" in one_line(err)
    assert not (runs / "s1" / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_refused_with_the_fix(runs, capsys):
    holder = {"pid": 1, "host": "elsewhere", "started": "2026-01-01T00:00:00", "command": "rtdmd distill x"}
    (runs / "s1" / LOCK_FILE).write_text(json.dumps(holder))
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "s1", "--resume")
    line = one_line(err)
    assert code == 2 and "is in use by PID 1 on elsewhere since 2026-01-01T00:00:00 (rtdmd distill x)" in line
    assert "if that process is gone, delete the lock file rtdmd.lock" in line


def test_a_stale_lock_of_a_dead_process_is_taken_over(runs, capsys):
    # A lock file whose holder is gone (no flock held; a PID that does not exist): what SIGKILL leaves.
    holder = {"pid": 2 ** 22 + 17, "host": os.uname().nodename, "started": "x", "command": "rtdmd distill"}
    (runs / "s1" / LOCK_FILE).write_text(json.dumps(holder))
    code, out, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "s1", "--resume", "--set",
                         "distill.iterations=7", "--set", EVERY2)
    assert code == 0, err
    assert f"was locked by PID {2 ** 22 + 17} on {os.uname().nodename}" in out and "taking it over" in out
    assert not (runs / "s1" / LOCK_FILE).exists()


def test_rerun_after_a_kill_before_the_first_checkpoint_starts_the_log_afresh(runs, capsys):
    run = runs / "early"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"stage": "distill", "step": 1, "fake_loss": 1.0}\n')  # killed at step 1
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", run, "--resume")
    assert code == 2 and "(the run stopped before its first checkpoint); start afresh without --resume" in err
    code, out, _ = cli(capsys, "distill", runs / "tiny.yaml", "--out", run)
    assert code == 0 and "starting afresh (its metrics.jsonl is replaced)" in out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "fake_loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_with_another_config_lists_the_keys(runs, capsys, no_model):
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "s1", "--resume", "--set",
                       "distill.eta=0.5", "--set", "backbone.hidden=8", "--set", "distill.iterations=9")
    line = one_line(err)
    assert code == 2 and "(backbone.hidden: 16 -> 8; distill.eta: 0.9 -> 0.5)" in line
    assert f"rtdmd distill {runs / 's1' / 'config.yaml'} --resume" in line
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "s2", "--resume")
    assert code == 2 and "holds a run of 'rtdmd align', not of 'rtdmd distill'" in one_line(err)


# -- a full disk -------------------------------------------------------------------------------------------------

def test_full_disk_during_a_checkpoint_ends_in_one_line_and_keeps_the_last(runs, capsys, monkeypatch):
    run = runs / "full"
    save_file = checkpoint_module.save_file

    def filling(tensors, filename, *args, **kwargs):
        if "_00000004_" in filename:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", filling)
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", run, "--set", EVERY2)
    line = one_line(err)
    assert code == 2 and "cannot write checkpoint step_00000004" in line and "(No space left on device)" in line
    assert "step_00000002, the last checkpoint, is untouched" in line and "continue with --resume" in line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["LATEST", "step_00000002"]  # no temporary left
    assert latest_checkpoint(run / "checkpoints").name == "step_00000002" and not (run / LOCK_FILE).exists()
    monkeypatch.setattr(checkpoint_module, "save_file", save_file)  # space freed: the run continues exactly
    assert cli(capsys, "distill", runs / "tiny.yaml", "--out", run, "--resume", "--set", EVERY2)[0] == 0
    a, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(runs / "s1" / "checkpoints"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_full_disk_while_logging_ends_in_one_line(runs, capsys, monkeypatch):
    import rtdmd.train.logging as logging_module

    class Full:
        def __init__(self, *args, **kwargs):
            pass

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            pass

    monkeypatch.setattr(logging_module, "open", Full, raising=False)
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "full")
    assert code == 2 and "cannot write" in one_line(err) and "metrics.jsonl (No space left on device)" in err


# -- output paths: checked before any model loads ----------------------------------------------------------------

@pytest.fixture
def image_run(tmp_path):
    """A run directory of an image model (a prompts world, an SD3 backbone) with a checkpoint: enough for every
    check before loading (its model folder does not even exist, so loading would fail)."""
    run = tmp_path / "image_run"
    (tmp_path / "train.txt").write_text("a red cube\n")
    raw = {"world": {"kind": "prompts", "train": str(tmp_path / "train.txt")},
           "backbone": {"kind": "sd3", "path": str(tmp_path / "no_model_here"), "height": 16, "width": 16},
           "reward": {"kind": "linear", "w": [0.0, 1.0]}}
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    (run / "run.json").write_text(json.dumps({"stage": "distill", "finished": True}))
    save_checkpoint(run / "checkpoints", 1, {"w": torch.zeros(2)}, {"step": 1, "stage": "distill"})
    return run


@pytest.mark.parametrize("command, extra, message", [
    ("generate", [], "is a file: give a folder"),
    ("evaluate", [], "is a file: give a folder"),
    ("export", [], "is a file: give a folder"),
    ("export", ["--format", "lora"], "is a file: give a folder"),
])
def test_an_output_that_is_a_file_is_refused_before_loading(image_run, tmp_path, capsys, no_model, command, extra,
                                                            message):
    target = tmp_path / "taken"
    target.write_text("x")
    code, _, err = cli(capsys, command, "--run", image_run, "--out", target, *extra)
    assert code == 2 and message in one_line(err) and target.read_text() == "x"


@pytest.mark.parametrize("command, extra", [("generate", []), ("evaluate", []), ("export", ["--format", "lora"]),
                                            ("export", ["--format", "merged"])])
def test_a_non_empty_output_folder_is_refused_before_loading(image_run, tmp_path, capsys, no_model, command, extra):
    out = tmp_path / "older"
    out.mkdir()
    (out / "pytorch_lora_weights.safetensors").write_text("an older export")
    code, _, err = cli(capsys, command, "--run", image_run, "--out", out, *extra)
    assert code == 2 and "is not empty: choose a new folder or empty it" in one_line(err)
    assert [p.name for p in out.iterdir()] == ["pytorch_lora_weights.safetensors"]


@pytest.mark.parametrize("extra, message", [
    (["--prompts", "missing.txt"], "prompt file missing.txt does not exist"),
    (["--reward", "clipscor"], "unknown kind 'clipscor' (did you mean 'clipscore'?)"),
    (["--checkpoint", "step_3"], "--checkpoint step_3: no such checkpoint"),
])
def test_evaluate_checks_its_files_before_loading(image_run, tmp_path, capsys, no_model, extra, message):
    code, _, err = cli(capsys, "evaluate", "--run", image_run, "--out", tmp_path / "e", *extra)
    assert code == 2 and message in one_line(err) and not (tmp_path / "e").exists()


def test_export_of_a_vector_world_is_refused_before_loading(runs, capsys, no_model):
    code, _, err = cli(capsys, "export", "--run", runs / "s1", "--out", runs / "x", "--format", "lora")
    assert code == 2 and "export needs a diffusers backbone" in one_line(err) and not (runs / "x").exists()


def test_unwritable_output_is_refused_before_loading(runs, capsys, no_model, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    for args in (["generate", "--run", runs / "s1", "--out", runs / "g"],
                 ["evaluate", "--run", runs / "s1", "--out", runs / "e.json"]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and "cannot write to" in one_line(err) and "(Read-only file system)" in err


def test_stage2_crash_at_any_moment_of_a_checkpoint_resumes_exactly(base, tmp_path, monkeypatch):
    # The kill of the crash hook is an exception here (the files on disk are what SIGKILL leaves; the real SIGKILL
    # of a process is in test_preemption.py): half written, then renamed but LATEST not updated.
    class Killed(BaseException):
        pass

    def kill(pid, signum):
        raise Killed

    monkeypatch.setattr(checkpoint_module.os, "kill", kill)
    full, _ = load_checkpoint(latest_checkpoint(base / "s2" / "checkpoints"))
    for moment in ("2", "2:renamed"):
        run = tmp_path / moment.replace(":", "_")
        monkeypatch.setenv(CRASH_HOOK, moment)
        with pytest.raises(Killed):
            align.run(tiny_config("align.checkpoint_every=1"), run, base / "s1")
        monkeypatch.delenv(CRASH_HOOK)
        align.run(tiny_config("align.checkpoint_every=1"), run, base / "s1", resume=True)
        split, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
        assert state["step"] == 4 and all(torch.equal(full[k], split[k]) for k in full), moment
        assert not list((run / "checkpoints").glob(".tmp*"))


def test_a_checkpoint_name_that_is_not_one(runs, capsys):
    code, _, err = cli(capsys, "generate", "--run", runs / "s1", "--checkpoint", "latest", "--out", runs / "g")
    assert code == 2 and "--checkpoint 'latest' is not a checkpoint name: give step_N" in one_line(err)


def test_user_error_type_of_the_checks():
    with pytest.raises(UserError):
        checkpoint_module.parse_checkpoint_name("step_x")


# -- point 8: messages that name the key, the value and the fix ---------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["{tmp}"], "config '{tmp}' is a directory, not a YAML file: give the config file itself"),
    (["{s1}"], "(this run directory's own is {s1}/config.yaml)"),
    (["{cfg}", "--set", "distill.log_every=0"],
     "distill.checkpoint_every >= 0 and log_every >= 1 (given: distill.checkpoint_every = 0, distill.log_every = 0)"),
    (["{cfg}", "--set", "backbone.kind=sd3"], "--set backbone.kind=sd3 switches backbone from kind 'mlp' to 'sd3', "
     "but the section keeps the keys of 'mlp' (hidden, depth, fit_steps, fit_batch, fit_points), which 'sd3' does "
     "not have: write a config whose backbone section is one for 'sd3'"),
    (["{cfg}", "--set", "reward.kind=clipscore"], "switches rewards.0 from kind 'linear' to 'clipscore'"),
    (["{cfg}", "--set", "preset=paper", "--set", "preset=exact"],
     "--set preset is given twice ('preset=paper', then 'preset=exact'): give each key once"),
    (["{cfg}", "--set", "distill.generator={{lr: 1.0}}", "--set", "distill.generator.lr=2"],
     "set the same key (distill.generator holds the other): give one of them"),
])
def test_configuration_messages(runs, capsys, no_model, args, message):
    fill = {"tmp": runs, "s1": runs / "s1", "cfg": runs / "tiny.yaml"}
    code, _, err = cli(capsys, "distill", *(a.format(**fill) for a in args), "--out", runs / "x")
    assert code == 2 and message.format(**fill) in one_line(err) and not (runs / "x").exists()


# -- the same on a real small disk (a tmpfs; needs root, as in the CI container; skipped elsewhere) ----------------

@contextmanager
def tmpfs(path, options):
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk):
    """Write a file until the disk is full."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_a_real_full_disk_and_a_real_read_only_mount(base, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        run = disk / "run"

        def fill_at_step_3(parts, step):
            if step == 3:
                fill(disk)
            return {}

        with pytest.raises(UserError, match=r"\(No space left on device\)") as err:
            distill.run(tiny_config(EVERY2, "run.eval_every=1"), run, evaluate=fill_at_step_3)
        assert "\n" not in str(err.value)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["LATEST", "step_00000002"]
        assert is_complete(run / "checkpoints" / "step_00000002")
        (disk / "filler").unlink()
        distill.run(tiny_config(EVERY2), run, resume=True)
        a, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"))
        b, _ = load_checkpoint(latest_checkpoint(base / "s1" / "checkpoints"))
        assert all(torch.equal(a[k], b[k]) for k in b)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        code, _, err = cli(capsys, "generate", "--run", base / "s1", "--out", read_only / "g")
        assert code == 2 and "cannot write to" in one_line(err) and "(Read-only file system)" in err
        code, _, err = cli(capsys, "distill", base / "tiny.yaml", "--out", read_only / "run")
        assert code == 2 and "cannot create the run directory" in one_line(err) and "Read-only" in err


def test_a_newest_checkpoint_removed_by_hand_is_not_replaced_silently(runs, capsys):
    shutil.rmtree(step_dir(runs / "s1", 6))  # LATEST still names it
    code, _, err = cli(capsys, "generate", "--run", runs / "s1", "--out", runs / "g")
    line = one_line(err)
    assert code == 2 and "LATEST names step_00000006, which is missing (removed?)" in line
    assert "the newest checkpoint present is step_00000004: pass --checkpoint step_00000004 to use it" in line
    code, _, err = cli(capsys, "distill", runs / "tiny.yaml", "--out", runs / "s1", "--resume")
    assert code == 2 and "write step_00000004 into" in one_line(err)


def test_an_explicitly_chosen_damaged_checkpoint_names_the_intact_newest(runs, capsys):
    flip(step_dir(runs / "s1", 4) / "tensors.safetensors")
    code, _, err = cli(capsys, "generate", "--run", runs / "s1", "--checkpoint", "step_4", "--out", runs / "g")
    assert code == 2 and "step_00000004 is damaged" in one_line(err)
    assert "the newest intact one is step_00000006: pass --checkpoint step_00000006 to use it" in err
