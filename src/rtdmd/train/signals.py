"""SIGTERM / Ctrl-C during training: finish the current iteration, write a checkpoint, exit cleanly.

Preemption (SLURM, Kubernetes, ``torchrun`` shutting its workers down) sends SIGTERM, and the ranks of a job
may receive it in different iterations. So the request is only recorded by the handler, and at the end of
every iteration the ranks agree (:meth:`StopRequest.agreed`, one tiny all-reduce): they all stop after the same
iteration and write one checkpoint together. A second Ctrl-C stops at once (``KeyboardInterrupt``, no
checkpoint); a SIGTERM after a Ctrl-C (``torchrun`` forwarding the interrupt) does not.

Exit codes (see :func:`exit_code`), both after the checkpoint is written: 75 after SIGTERM (``PREEMPTED``), 130
after Ctrl-C. Either way ``run.json`` records ``"finished": false`` and the signal (``stopped_by``).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

import torch

# SIGTERM asks a job to stop and come back later. The run is not finished, so the code is not 0 (``rtdmd distill
# ... && rtdmd align ...`` must not go on to stage 2), and it is not 143 (128 + SIGTERM, what a process killed by
# the signal returns, checkpoint or not): 75 is EX_TEMPFAIL of sysexits.h, "temporary failure, try again later",
# which a scheduler's retry rule can match (Kubernetes podFailurePolicy onExitCodes, a requeue script). Ctrl-C is
# a person interrupting: 130 (128 + SIGINT), as shells expect.
PREEMPTED = 75
EXIT_CODES = {signal.SIGTERM: PREEMPTED, signal.SIGINT: 130}


def exit_code(signum: int | None) -> int:
    return 0 if signum is None else EXIT_CODES.get(signum, 128 + int(signum))


class StopRequest:
    def __init__(self):
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def agreed(self, dist) -> bool:
        """True on every rank when any rank was asked to stop (a collective: call it on all ranks, once per
        iteration). The ranks also agree on the reason: Ctrl-C if any rank saw one, else SIGTERM."""
        votes = torch.tensor([float(self.signal == signal.SIGINT), float(self.signal == signal.SIGTERM)],
                             device=dist.device)
        interrupted, terminated = dist.all_reduce_sum(votes).tolist()
        if interrupted == 0 and terminated == 0:
            return False
        self.signal = signal.SIGINT if interrupted else signal.SIGTERM
        return True


@contextmanager
def stop_on_signals():
    request = StopRequest()

    def handler(signum, frame):
        if request.signal == signal.SIGINT and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        if request.signal is None:
            request.signal = signum

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Stopped(Exception):
    """A stage stopped by a signal inside a command that cannot go on without it (the demo's next stage); the
    command line exits with the signal's code (:func:`exit_code`)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.code = exit_code(signum)


def raise_if_stopped(result: dict) -> dict:
    """``result`` of a stage, or :class:`Stopped` when a signal ended it early."""
    if result.get("stopped_by_signal") is not None:
        raise Stopped(int(result["stopped_by_signal"]))
    return result
