"""``rtdmd demo``: the main job. Both stages on an embedded world, evaluation of teacher, stage 1 and stage 2
on the same prompts and seeds, and a report (``report.html``, PNG figures, ``metrics.json``) in ``--out``.

The default world is the shapes world (a pixel-space SD3 teacher, GenEval-style prompts, learned rewards, the
oracle on held-out prompts as the signal kept out of training); ``--world gmm`` runs the analytic world, whose
targets are known in closed form. Each world's demo is registered under its kind in :data:`rtdmd.demo.DEMOS`."""

from __future__ import annotations

import json
from pathlib import Path

from rtdmd.config import load_config
from rtdmd.demo import DEMOS, demo_for
from rtdmd.demo.common import claims_table, quiet_image_processor_fallback
from rtdmd.errors import UserError

WORLDS = ("shapes", "gmm")


def demo_command(args) -> int:
    if args.config and args.world:
        raise UserError("give --world or --config, not both (--world W is --config W/default)")
    name = args.config or f"{args.world or WORLDS[0]}/default"
    kind = load_config(name, args.overrides).world.kind
    if kind not in DEMOS:
        raise UserError(f"config {name} is a {kind!r} world, which has no demo: use --world "
                        f"{' or --world '.join(WORLDS)}")
    quiet_image_processor_fallback()
    demo = demo_for(kind)
    out = Path(args.out)
    summary = demo(out, name, args.overrides, args.quick)
    print(final_table(out, summary))
    print(f"rtdmd: report in {out / 'report.html'} (figures and every number in metrics.json beside it)")
    return 0


def final_table(out: Path, summary: dict) -> str:
    """What the demo prints at the end: its claims as a table when it checks claims (``metrics.json``), else its
    summary one number a line."""
    metrics = out / "metrics.json"
    claims = json.loads(metrics.read_text()).get("claims") if metrics.is_file() else None
    if claims:
        return claims_table(claims)
    width = max((len(k) for k in summary), default=0)
    return "\n".join(f"{k.ljust(width)}  {v:.4g}" if isinstance(v, float) else f"{k.ljust(width)}  {v}"
                     for k, v in summary.items())


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: both stages on an embedded world, then a report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--world", choices=WORLDS, default=None,
                   help="embedded world (default: shapes; gmm = the analytic world)")
    p.add_argument("--config", default=None, help="instead of --world: any config of a world with a demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="a short run for CI (same pipeline, fewer iterations)")
    p.set_defaults(func=demo_command)
