"""The ``rtdmd`` command line. Each subcommand lives in :mod:`rtdmd.commands` and registers itself with
``add_parser(subparsers)``; a user error ends with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rtdmd.errors import UserError
from rtdmd.train.lock import release_all
from rtdmd.train.signals import Stopped

COMMANDS = [
    "rtdmd.commands.train",  # distill, align
    "rtdmd.commands.generate",
    "rtdmd.commands.evaluate",
    "rtdmd.commands.demo",
    "rtdmd.commands.reward_server",
    "rtdmd.commands.export",
    "rtdmd.commands.prompts",  # list, fetch, geneval
    "rtdmd.commands.plan",
]


class Parser(argparse.ArgumentParser):
    """Command-line mistakes end like every other user error: one line, exit code 2 (``--help`` shows usage)."""

    def error(self, message: str):
        self.exit(2, f"rtdmd: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rtdmd", description=__doc__.split(".")[0] + ".")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def _rank_tag() -> str:
    """``[rank N] `` in the processes of a multi-process launch other than rank 0 (whose errors are untagged)."""
    rank = os.environ.get("RANK", "0")
    return "" if rank == "0" or os.environ.get("WORLD_SIZE", "1") == "1" else f"[rank {rank}] "


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"rtdmd: error: {_rank_tag()}{' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    except Stopped as stop:  # a stage stopped by a signal (it said so, and that its checkpoint is written)
        return stop.code
    except KeyboardInterrupt:
        print("rtdmd: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the environment, not the code: a full disk, a read-only mount, a vanished file
        where = f" {err.filename}" if err.filename else ""
        print(f"rtdmd: error: {_rank_tag()}cannot access{where} ({err.strerror or err}): free space, fix the "
              "permissions or choose another path", file=sys.stderr)
        return 2
    finally:
        release_all()  # a run that ended in an error gives its run directory up before the command returns


if __name__ == "__main__":
    sys.exit(main())
