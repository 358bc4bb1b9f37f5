"""Start N local processes the way ``torchrun`` does (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), so that ``rtdmd.train.parallel.init_distributed`` joins a gloo group. For tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import rtdmd

REPO = Path(__file__).resolve().parents[2]
SRC = Path(rtdmd.__file__).resolve().parents[1]  # the rtdmd under test, whichever checkout that is


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment with this checkout importable (``rtdmd`` and ``tests``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class Job:
    """``world_size`` processes of ``python ARGS``; their output goes to ``logs/rank<r>.log``."""

    def __init__(self, args: list[str], world_size: int, logs: Path, env: dict[str, str] | None = None):
        port, logs = free_port(), Path(logs)
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = [logs / f"rank{r}.log" for r in range(world_size)]
        self.procs = []
        for rank in range(world_size):
            rank_env = child_env({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                                  "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                                  "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", **(env or {})})
            with open(self.logs[rank], "w") as log:
                self.procs.append(subprocess.Popen([sys.executable, *args], env=rank_env, stdout=log,
                                                   stderr=subprocess.STDOUT, cwd=REPO))

    def wait(self, timeout: float) -> list[int]:
        """Exit codes in rank order; kills everything left after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            for proc in self.procs:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return [proc.returncode for proc in self.procs]

    def output(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")

    def report(self) -> str:
        return "\n".join(f"--- rank {r} ---\n{self.output(r)[-4000:]}" for r in range(len(self.procs)))
