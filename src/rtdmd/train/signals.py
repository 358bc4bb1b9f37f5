"""SIGTERM / Ctrl-C during training: finish the current iteration, write a checkpoint, exit cleanly."""

from __future__ import annotations

import signal
from contextlib import contextmanager


class StopRequest:
    def __init__(self):
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals():
    request = StopRequest()

    def handler(signum, frame):
        if request.signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
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
