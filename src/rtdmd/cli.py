"""The ``rtdmd`` command line. Each subcommand lives in :mod:`rtdmd.commands` and registers itself with
``add_parser(subparsers)``; a user error ends with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from rtdmd.errors import UserError

COMMANDS = [
    "rtdmd.commands.train",  # distill, align
    "rtdmd.commands.generate",
    "rtdmd.commands.evaluate",
    "rtdmd.commands.demo",
    "rtdmd.commands.reward_server",
    "rtdmd.commands.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdmd", description=__doc__.split(".")[0] + ".")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"rtdmd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rtdmd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
