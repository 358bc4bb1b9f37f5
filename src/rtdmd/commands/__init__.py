"""Subcommands of the ``rtdmd`` command line; each module has ``add_parser(subparsers)``."""
