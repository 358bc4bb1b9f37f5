"""Faults that need other processes (issue 14): two runs started on one ``--out`` (one process, and a two-rank
launch, against a live owner), through the command line in real subprocesses. The stale lock a SIGKILL leaves
is taken over in ``test_preemption.py`` (one process) and ``test_distributed.py`` (two ranks)."""

import json
import signal

import pytest

from rtdmd.train.checkpoint import checkpoint_dirs, latest_checkpoint, load_checkpoint
from rtdmd.train.lock import LOCK_FILE
from rtdmd.train.signals import PREEMPTED
from tests.train.multiprocess import Job
from tests.train.test_preemption import config_file, finish, logged_steps, start, wait_for_step  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


def test_a_second_run_on_the_same_out_is_refused_and_nothing_mixes(config_file, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    # Frequent checkpoints: the case where the second run used to delete the first one's temporary folders.
    owner = start(["distill", config_file, "--out", run, "--set", "distill.iterations=100000", "--set",
                   "distill.checkpoint_every=1", "--set", "distill.generator.lr=1e-3"])
    try:
        wait_for_step(run, 2, [owner])
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == owner.pid and holder["command"].startswith("rtdmd distill ")

        # Three intruders at once: a fresh start, a --resume, and a two-rank launch.
        second = ["distill", config_file, "--out", run, "--set", "distill.generator.lr=1e-2"]
        fresh, resumed = start(second), start([*second, "--resume"])
        job = Job(["-m", "rtdmd.cli", *map(str, second)], 2, tmp_path / "logs")
        code, out, err = finish(fresh)
        assert code == 2 and out == ""
        assert err.splitlines() == [f"rtdmd: error: {run} is in use by PID {owner.pid} on {holder['host']} since "
                                    f"{holder['started']} ({holder['command']}): wait for it to end, or use another "
                                    "--out"]
        code, _, err = finish(resumed)
        assert code == 2 and f"is in use by PID {owner.pid}" in err and len(err.splitlines()) == 1
        assert job.wait(timeout=180) == [2, 2], job.report()
        (line,) = job.output(0).strip().splitlines()  # rank 0 holds the lock: its own line, untagged
        assert line.startswith(f"rtdmd: error: {run} is in use by PID {owner.pid}")
        assert job.output(1).strip().splitlines() == [
            "rtdmd: error: [rank 1] another rank could not prepare the run directory (its error line says why)"]
    finally:
        if owner.poll() is None:
            owner.send_signal(signal.SIGTERM)
    code, out, err = finish(owner)
    assert code == PREEMPTED and err.strip() == "", err
    # Nothing mixed: the owner's config, its steps once each, its checkpoints only, no temporary folder left.
    assert "lr: 0.001" in (run / "config.yaml").read_text()
    steps = logged_steps(run)
    assert steps == list(range(1, steps[-1] + 1))
    assert [p.name for p in checkpoint_dirs(run / "checkpoints")][-1] == f"step_{steps[-1]:08d}"
    _, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert state["fingerprint"]["stage"]["generator"]["lr"] == 1e-3
    assert not list((run / "checkpoints").glob(".tmp*")) and not (run / LOCK_FILE).exists()
