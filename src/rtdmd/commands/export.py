"""``rtdmd export --run RUN_DIR --out DIR``: the run's trained generator (EMA weights) as a standalone diffusers
folder (``--format merged``, the default) or as a LoRA for a stock pipeline's ``load_lora_weights``
(``--format lora``); both carry the CPS scheduler with the run's eta and step list."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a trained generator for stock diffusers",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder of a finished (or checkpointed) stage")
    parser.add_argument("--out", required=True, help="folder to write (must be new or empty)")
    parser.add_argument("--format", choices=("merged", "lora"), default="merged",
                        help="merged: standalone pipeline folder; lora: diffusers LoRA weights (default: merged)")
    parser.add_argument("--eta", type=float, default=None, help="CPS eta of the scheduler (default: the run's)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rtdmd import export
    from rtdmd.train.runs import load_run

    config, backbone = load_run(args.run)
    eta = config.distill.eta if args.eta is None else args.eta
    write = export.export_merged if args.format == "merged" else export.export_lora
    out = write(backbone, args.out, eta=eta, step_list=config.distill.step_list)
    print(f"wrote {args.format} export to {out}")
    return 0
