"""Surviving kills and preemption, through the command line in real subprocesses:

- SIGKILL while a checkpoint is half written (a test hook in ``save_checkpoint`` makes the moment exact):
  ``--resume`` continues from the last complete checkpoint and ends where an uninterrupted run ends, bit for bit;
- SIGTERM (exit 75, ``PREEMPTED``) and Ctrl-C (exit 130) write a checkpoint after the current iteration, record
  ``"finished": false`` and release the run directory; ``--resume`` continues.

(Two processes where only one rank receives SIGTERM: test_distributed.py.)

Subprocesses and the in-process reference runs use one intra-op thread, so that their float results are
comparable bit for bit (and because threads only contend on a shared CI machine with models this small).
"""

import json
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
import yaml

from rtdmd.train import distill
from rtdmd.train.checkpoint import CRASH_HOOK, LATEST, latest_checkpoint, load_checkpoint
from rtdmd.train.lock import LOCK_FILE
from rtdmd.train.signals import PREEMPTED
from tests.tiny import TINY, tiny_config
from tests.train.multiprocess import REPO, child_env

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def uninterrupted(run_dir, *overrides):
    with one_thread():
        distill.run(tiny_config(*overrides), run_dir)
    return tensors(run_dir)


def start(args, env=None):
    env = child_env({"OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.Popen([sys.executable, "-m", "rtdmd.cli", *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def tensors(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))[0]


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def logged_steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "fake_loss" in json.loads(line)]


def wait_for_step(run_dir, step, procs, timeout=120):
    """Block until ``run_dir``'s metrics log reaches ``step`` (the run is then inside its training loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "the run ended before it was signalled"
        path = run_dir / "metrics.jsonl"
        if path.exists() and any(s >= step for s in logged_steps_lenient(path)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} did not reach step {step}")


def logged_steps_lenient(path):
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if "fake_loss" in record:
            steps.append(record["step"])
    return steps


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(config_file, tmp_path):
    run = tmp_path / "run"
    args = ["distill", config_file, "--out", run, "--set", "distill.checkpoint_every=2"]
    code, _, err = finish(start(args, {CRASH_HOOK: "4"}))
    assert code == -signal.SIGKILL, err
    root = run / "checkpoints"
    assert (root / LATEST).read_text() == "step_00000002"
    half = list(root.glob(".tmp_step_00000004_*"))
    assert len(half) == 1 and (half[0] / "tensors.safetensors").exists() and not (half[0] / "manifest.json").exists()
    assert latest_checkpoint(root).name == "step_00000002"

    code, out, err = finish(start([*args, "--resume"]))
    assert code == 0, err
    assert "which is no longer running; taking it over" in out  # the lock the killed process left
    assert "step_00000002 (step 2)" in out and "stage 1 finished" in out
    assert not list(root.glob(".tmp_*"))  # the half-written checkpoint was cleared
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]
    assert_identical(tensors(run), uninterrupted(tmp_path / "uninterrupted"))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, PREEMPTED), (signal.SIGINT, 130)])
def test_signal_writes_a_checkpoint_and_resume_continues(config_file, tmp_path, signum, code):
    run = tmp_path / "run"
    args = ["distill", config_file, "--out", run]
    proc = start([*args, "--set", "distill.iterations=100000"])
    wait_for_step(run, 2, [proc])
    proc.send_signal(signum)
    returncode, out, err = finish(proc)
    assert returncode == code, err
    stopped = logged_steps(run)[-1]
    name = signal.Signals(signum).name
    assert f"stopped by {name} after step {stopped}; checkpoint written" in out and "finished" not in out
    assert err.strip() == ""  # no traceback, no error line
    checkpoint = latest_checkpoint(run / "checkpoints")
    assert checkpoint.name == f"step_{stopped:08d}"
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["stopped_by_signal"] == name
    record = json.loads((run / "run.json").read_text())
    assert (record["finished"], record["stopped_by"], record["step"]) == (False, name, stopped)
    assert not (run / LOCK_FILE).exists()  # released on the way out
    if signum != signal.SIGTERM:
        return  # the resume after a stop is the same path for both signals
    end = stopped + 2
    returncode, out, err = finish(start([*args, "--resume", "--set", f"distill.iterations={end}"]))
    assert returncode == 0, err
    assert logged_steps(run) == list(range(1, end + 1))
    assert json.loads((run / "run.json").read_text())["finished"] is True
    assert_identical(tensors(run), uninterrupted(tmp_path / "uninterrupted", f"distill.iterations={end}"))


def test_resume_after_a_metrics_line_cut_short(tmp_path):
    run = tmp_path / "run"
    distill.run(tiny_config("distill.iterations=3"), run)
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"stage": "distill", "step": 4, "fake_lo')  # killed in the middle of a write
    distill.run(tiny_config(), run, resume=True)
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]
    assert all(line.endswith("}") for line in (run / "metrics.jsonl").read_text().splitlines())

