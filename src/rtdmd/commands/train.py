"""``rtdmd distill`` (stage 1) and ``rtdmd align`` (stage 2). Run them on several processes with
``torchrun --nproc_per_node N -m rtdmd.cli distill ...`` (``run.parallel``: ddp or fsdp).

Exit codes: 0 when the stage finished, or when SIGTERM stopped it after writing a checkpoint (continue with
``--resume``); 130 when Ctrl-C stopped it after writing a checkpoint; 2 for a user error (one line on stderr)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rtdmd.app.world_metrics import evaluate_role
from rtdmd.config import load_config
from rtdmd.train import align as stage2
from rtdmd.train import distill as stage1
from rtdmd.train.parallel import shutdown
from rtdmd.train.signals import exit_code


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file, or a shipped config name such as gmm/default")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set distill.iterations=500 (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<stage>-<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue the latest complete checkpoint in --out")


def _default_out(config: str, stage: str) -> Path:
    return Path("runs") / f"{stage}-{Path(config).stem}"


def _world_evaluator(config):
    """Evaluation at run.eval_every and at the end, when the world has closed-form metrics."""
    def evaluate(parts, step):
        return evaluate_role(parts, config)["summary"]

    return evaluate


def _finish(result: dict, stage: str, out: Path) -> int:
    """The exit code of a training command (see the module docstring)."""
    signum = result.get("stopped_by_signal")
    if signum is None and _is_main():
        print(f"rtdmd: {stage} finished: {out}")
    return exit_code(signum)


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def distill(args) -> int:
    config = load_config(args.config, args.overrides)
    out = args.out or _default_out(args.config, "distill")
    result = stage1.run(config, out, resume=args.resume, evaluate=_world_evaluator(config))
    shutdown()  # only on success: after an error this process exits, and torchrun stops the others
    return _finish(result, "stage 1", out)


def align(args) -> int:
    config = load_config(args.config, args.overrides)
    out = args.out or _default_out(args.config, "align")
    result = stage2.run(config, out, args.from_dir, resume=args.resume, evaluate=_world_evaluator(config))
    shutdown()  # only on success: after an error this process exits, and torchrun stops the others
    return _finish(result, "stage 2", out)


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="stage 1: AC-DMD distillation into a 4-step generator")
    _common(p)
    p.set_defaults(func=distill)
    p = sub.add_parser("align", help="stage 2: RTDMD reward-tilted fine-tuning of a stage-1 run")
    _common(p)
    p.add_argument("--from", dest="from_dir", type=Path, required=True, metavar="STAGE1_RUN_DIR",
                   help="the run directory of 'rtdmd distill'")
    p.set_defaults(func=align)
