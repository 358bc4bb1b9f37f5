"""``rtdmd distill`` (stage 1) and ``rtdmd align`` (stage 2). Run them on several processes with
``torchrun --nproc_per_node N -m rtdmd.cli distill ...`` (``run.parallel``: ddp or fsdp).

Exit codes: 0 when the stage finished; 75 when SIGTERM (preemption) stopped it after writing a checkpoint
(continue with ``--resume``); 130 when Ctrl-C stopped it after writing a checkpoint; 2 for a user error (one line
on stderr); 143 when SIGTERM came before training started (nothing to save). ``RUN/run.json`` records
``"finished"``."""

from __future__ import annotations

import argparse
import os
import signal
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


def _exit_on_sigterm() -> None:
    """Until the training loop takes SIGTERM over (to finish the iteration and save), a SIGTERM ends the command
    as an exception would, so that the run directory's lock is released on the way out."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (the command called from a library)
        pass


def distill(args) -> int:
    _exit_on_sigterm()
    config = load_config(args.config, args.overrides)
    out = args.out or _default_out(args.config, "distill")
    result = stage1.run(config, out, resume=args.resume, evaluate=_world_evaluator(config))
    shutdown()  # only on success: after an error this process exits, and torchrun stops the others
    return _finish(result, "stage 1", out)


def align(args) -> int:
    _exit_on_sigterm()
    config = load_config(args.config, args.overrides)
    out = args.out or _default_out(args.config, "align")
    result = stage2.run(config, out, args.from_dir, resume=args.resume, evaluate=_world_evaluator(config),
                        from_checkpoint=args.from_checkpoint, allow_unfinished=args.allow_unfinished)
    shutdown()  # only on success: after an error this process exits, and torchrun stops the others
    return _finish(result, "stage 2", out)


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="stage 1: AC-DMD distillation into a 4-step generator")
    _common(p)
    p.set_defaults(func=distill)
    p = sub.add_parser("align", help="stage 2: RTDMD reward-tilted fine-tuning of a stage-1 run")
    _common(p)
    p.add_argument("--from", dest="from_dir", type=Path, required=True, metavar="STAGE1_RUN_DIR",
                   help="the run directory of 'rtdmd distill' (a finished one: see --allow-unfinished)")
    p.add_argument("--from-checkpoint", default=None, metavar="step_N",
                   help="start from this checkpoint of the --from run instead of its newest")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="accept a --from run that did not finish (stopped by a signal or an error, or running)")
    p.set_defaults(func=align)
