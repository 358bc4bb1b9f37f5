"""``rtdmd export --run RUN_DIR --out DIR``: the run's trained generator (EMA weights) as a standalone diffusers
folder (``--format merged``, the default) or as a LoRA for a stock pipeline's ``load_lora_weights``
(``--format lora``); both carry the CPS scheduler with the run's eta and step list, and ``rtdmd_export.json``
records the run, stage, step, checkpoint and checkpoint hash. ``--out`` must be new or empty (checked, like the
run and its checkpoint, before the model loads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtdmd import registry
from rtdmd.app.outputs import check_output_dir
from rtdmd.app.runs import load_run, open_run
from rtdmd.errors import UserError
from rtdmd.worlds.base import AnalyticWorld


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a trained generator for stock diffusers",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run directory of 'rtdmd distill' or 'rtdmd align'")
    parser.add_argument("--checkpoint", default=None, metavar="step_N",
                        help="export this checkpoint of the run (default: its newest, which must be intact)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must be new or empty)")
    parser.add_argument("--format", choices=("merged", "lora"), default="merged",
                        help="merged: standalone pipeline folder; lora: diffusers LoRA weights (default: merged)")
    parser.add_argument("--eta", type=float, default=None, help="CPS eta of the scheduler (default: the stage's)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError(f"--eta must lie in [0, 1], got {args.eta}")
    ref = open_run(args.run, args.checkpoint)
    world = registry.builder("world", ref.config.world.kind)(ref.config.world)  # cheap: no model
    if isinstance(world, AnalyticWorld):
        raise UserError(f"export needs a diffusers backbone (sd3, flux1, flux2_klein); {args.run} is a run of the "
                        f"analytic world (backbone '{ref.config.backbone.kind}'): use rtdmd generate instead")
    check_output_dir(args.out)
    from rtdmd.app import export  # diffusers: imported only when exporting

    loaded = load_run(ref, args.device)
    stage_cfg = loaded.stage_config
    eta = stage_cfg.eta if args.eta is None else args.eta
    write = export.export_merged if args.format == "merged" else export.export_lora
    out = write(loaded.components.backbone, args.out, eta=eta, step_list=stage_cfg.step_list,
                provenance=ref.provenance)
    print(f"rtdmd: wrote the {args.format} export of {args.run} ({ref.checkpoint.name}, step {ref.step}) to {out}")
    return 0
