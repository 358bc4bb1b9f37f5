"""``rtdmd export --run RUN_DIR --out DIR``: the run's trained generator (EMA weights) as a standalone diffusers
folder (``--format merged``, the default) or as a LoRA for a stock pipeline's ``load_lora_weights``
(``--format lora``); both carry the CPS scheduler with the run's eta and step list."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtdmd.app.runs import load_run


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a trained generator for stock diffusers",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run directory of 'rtdmd distill' or 'rtdmd align'")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must be new or empty)")
    parser.add_argument("--format", choices=("merged", "lora"), default="merged",
                        help="merged: standalone pipeline folder; lora: diffusers LoRA weights (default: merged)")
    parser.add_argument("--eta", type=float, default=None, help="CPS eta of the scheduler (default: the stage's)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rtdmd.app import export  # diffusers: imported only when exporting

    loaded = load_run(args.run, args.device)
    stage_cfg = loaded.stage_config
    eta = stage_cfg.eta if args.eta is None else args.eta
    write = export.export_merged if args.format == "merged" else export.export_lora
    out = write(loaded.components.backbone, args.out, eta=eta, step_list=stage_cfg.step_list)
    print(f"rtdmd: wrote the {args.format} export of {args.run} (step {loaded.step}) to {out}")
    return 0
