"""One owner per run directory: ``RUN/rtdmd.lock``.

The process that trains into a run directory creates the lock file exclusively (``O_CREAT | O_EXCL``), writes
who it is (PID, host, start time, command) into it and holds an advisory ``flock`` on it for its whole life.
A second process finds the file and refuses with one line naming the holder. The owner removes the file on any
exit it lives through: the end of the run, an error, Ctrl-C, SIGTERM (the training loop turns it into a normal
return), and at interpreter exit for whatever escaped.

A SIGKILL or a power cut leaves the file behind. It is *stale* when its holder ran on this host and the kernel
no longer holds its ``flock`` (the kernel drops it when the process dies, whatever killed it, and a recycled
PID cannot hold it); then the next process takes the run over with a printed note. On file systems without
``flock`` the PID is checked instead. A lock written on another host cannot be checked from here: the message
says to delete the file if that process is gone.

Under ``torchrun`` only rank 0 writes into the run directory, so rank 0 alone takes the lock, for the whole job;
the ranks then agree on the outcome (:func:`rtdmd.train.session.Session` does), so that a refused launch stops
every rank with one line instead of leaving the others waiting in a collective.

Within one process, a later :class:`RunLock` of the same directory takes over from an earlier one that was not
released (a notebook re-running a cell after an error): one process trains into a run directory at a time.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rtdmd.errors import UserError

LOCK_FILE = "rtdmd.lock"

_HELD: dict[str, RunLock] = {}  # lock path -> the lock this process holds on it


def read_holder(path: Path) -> dict[str, Any] | None:
    """The record in a lock file (None: unreadable or still being written)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "a process that has not written its name yet"
    return (f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
            f"({holder.get('command', '?')})")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's live process, or a record we cannot judge: not stale
    return True


def _still_at(fd: int, path: Path) -> bool:
    """``fd`` is the file that ``path`` names now (not one unlinked or replaced meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class RunLock:
    """The lock of one run directory (module docstring). ``acquire()`` or a one-line :class:`UserError`."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None
        self.created_dir = False

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        if not self.run_dir.exists():
            self._make_dir()
        for _ in range(5):  # a lost race against another process taking over the same stale lock: look again
            if self._create():
                return
            if not self._take_over():
                holder = read_holder(self.path)
                raise UserError(f"{self.run_dir} is in use by {describe(holder)}: wait for it to end, or use another "
                                f"--out{self._remote_hint(holder)}")
        raise UserError(f"{self.run_dir}: could not take {self.path} (other processes keep taking it): try again")

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the flock; then the run directory itself if this
        lock created it and nothing else was written there."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _HELD.pop(str(self.path), None)
        try:
            if _still_at(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)
        if self.created_dir:
            try:
                self.run_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass

    # -- internals -------------------------------------------------------------------------------------------

    def _make_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True)
            self.created_dir = True
        except FileExistsError:
            pass
        except OSError as err:
            raise UserError(f"cannot create the run directory {self.run_dir} ({err.strerror}): choose another "
                            f"--out") from None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise UserError(f"cannot write the run directory {self.run_dir} ({err.strerror}): choose another "
                            f"--out") from None
        try:
            _flock(fd, blocking=True)  # a checker may hold it for an instant while it reads the record
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": _command()}
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise UserError(f"cannot write {self.path} ({err.strerror}): free space or choose another --out") from None
        self.fd = fd
        _HELD[str(self.path)] = self
        return True

    def _take_over(self) -> bool:
        """Remove the lock file if its holder is gone (or is an unreleased lock of this very process); True
        when removed, so that the caller creates its own."""
        previous = _HELD.get(str(self.path))
        if previous is not None and previous is not self:  # this process: an earlier session left it held
            previous.release()
            return True
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return True  # released meanwhile
        try:
            holder = read_holder(self.path)
            if holder is None or holder.get("host") != socket.gethostname() or not self._dead(fd, holder):
                return False
            if not _still_at(fd, self.path):
                return True  # replaced meanwhile: look again
            # We hold the dead owner's flock on the file that is at the path: nobody else can be taking it over.
            self.path.unlink()
            print(f"rtdmd: note: {self.run_dir} was locked by {describe(holder)}, which is no longer running; "
                  "taking it over", flush=True)
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _dead(fd: int, holder: dict[str, Any]) -> bool:
        try:
            _flock(fd, blocking=False)
            return True  # nobody holds it: the owner is gone (the kernel drops the flock of a dead process)
        except BlockingIOError:
            return False
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            return not _pid_alive(holder.get("pid"))  # no flock on this file system: the PID has to do

    @staticmethod
    def _remote_hint(holder: dict[str, Any] | None) -> str:
        if holder is not None and holder.get("host") != socket.gethostname():
            return f" (if that process is gone, delete the lock file {LOCK_FILE} in the run directory)"
        if holder is None:
            return f" (if no rtdmd process uses it, delete {LOCK_FILE} in the run directory)"
        return ""


@atexit.register
def release_all() -> None:
    """Every lock this process still holds: at interpreter exit, and when a command ends (an error that ended a
    run before its end released it)."""
    for lock in list(_HELD.values()):
        lock.release()


def _flock(fd: int, blocking: bool) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))


def _command() -> str:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    program = "rtdmd" if program in ("cli.py", "__main__.py") else program  # python -m rtdmd.cli
    text = " ".join([program, *sys.argv[1:]])
    return text if len(text) <= 400 else text[:397] + "..."


def holder_if_running(run_dir: Path) -> dict[str, Any] | None:
    """The record of the process that holds ``run_dir`` now (None if nobody does, or its holder is gone)."""
    path = Path(run_dir) / LOCK_FILE
    holder = read_holder(path)
    if holder is None:
        return None
    if holder.get("host") != socket.gethostname() or str(path) in _HELD:
        return holder
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return None if RunLock._dead(fd, holder) else holder
    finally:
        os.close(fd)
