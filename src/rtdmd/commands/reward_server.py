"""``rtdmd reward-server``: serve any registered reward over HTTP (protocol in :mod:`rtdmd.rewards.remote`).

    rtdmd reward-server --reward hpsv2 --set path=/weights/hpsv2 --port 8765
    rtdmd reward-server --reward compositional --set detector=geneval_detector:build --port 8766

Then use it from a run with ``rewards: [{kind: remote, url: "http://HOST:8765"}]``.
"""

from __future__ import annotations

import argparse
import sys

from rtdmd import registry
from rtdmd.config import parse_override, strict
from rtdmd.devices import resolve_device
from rtdmd.errors import UserError
from rtdmd.rewards import server


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("reward-server", help="serve a reward over HTTP for runs in other processes",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", required=True, metavar="KIND", help="a registered reward kind (e.g. hpsv2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a key of the reward's config (repeatable), e.g. --set path=/weights/hpsv2")
    parser.add_argument("--name", default=None, help="name reported by /info (default: the kind)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port, printed at start-up)")
    parser.add_argument("--device", default="auto", help="torch device for the reward (auto: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.add_argument("--max-request-mb", type=float, default=server.MAX_BODY / 2**20,
                        help="largest request body in MiB (larger ones get 413; default %(default)g)")
    parser.add_argument("--timeout", type=float, default=server.TIMEOUT,
                        help="seconds a stalled connection is kept (default %(default)g)")
    parser.add_argument("--max-connections", type=int, default=server.MAX_CONNECTIONS,
                        help="connections served at once; more get 503 (default %(default)d)")
    parser.set_defaults(func=run)


def build(kind: str, overrides: list[str], device: str):
    """The reward of ``kind`` with its config built strictly from ``key=value`` items; returns (reward, config)."""
    params: dict = {"kind": kind}
    for item in overrides:
        key, value = parse_override(item)
        params[key] = value
    cls = registry.config_class("reward", kind)
    config = strict.build(cls, params, "reward", lambda section, k: registry.config_class(section, k))
    return registry.builder("reward", kind)(config, world=None, device=device), strict.to_dict(config)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in [0, 65535] (0: any free port), got {args.port}")
    limits = {"--max-request-mb": args.max_request_mb, "--timeout": args.timeout,
              "--max-connections": args.max_connections}
    bad = next((k for k, v in limits.items() if not v > 0), None)
    if bad is not None:
        raise UserError(f"{bad} must be positive, got {limits[bad]}")
    device = str(resolve_device(args.device))
    reward, config = build(args.reward, args.set, device)
    try:
        serving = server.make_server(reward, name=args.name or args.reward, kind=args.reward, config=config,
                                     host=args.host, port=args.port, quiet=args.quiet,
                                     max_body=int(args.max_request_mb * 2**20), timeout=args.timeout,
                                     max_connections=args.max_connections)
    except OSError as err:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({err.strerror}): choose another --port") from None
    host, port = serving.server_address[:2]
    print(f"rtdmd reward-server: serving reward '{args.reward}' on http://{host}:{port} "
          "(GET /info, POST /score)", flush=True)
    try:
        serving.serve_forever()
    except KeyboardInterrupt:
        print("rtdmd reward-server: stopped", file=sys.stderr)
    finally:
        serving.server_close()
    return 0
