"""``rtdmd plan CONFIG [--gpus N] [--gpu-memory 80GiB]``: per-GPU peak memory of both stages by term, the FLOPs of
an iteration and the fewest GPUs each stage fits on, planned from one iteration on fake tensors at the config's
true sizes (no GPU, no weights, no download; a published model's configs ship with rtdmd)."""

from __future__ import annotations

import warnings

from rtdmd.config import load_config
from rtdmd.errors import UserError


def quiet() -> None:
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")


def plan(args) -> int:
    from rtdmd.app.plan.planner import STAGES, Planner
    from rtdmd.app.plan.report import parse_memory, report

    memory = parse_memory(args.gpu_memory)
    if args.gpus < 1:
        raise UserError(f"--gpus {args.gpus}: give a number of GPUs >= 1")
    config = load_config(args.config, args.overrides)
    quiet()
    stages = STAGES if args.stage == "both" else (args.stage,)
    planner = Planner(config)
    run = config.run
    print(f"rtdmd plan {args.config}: {args.gpus} GPU(s) of {memory / 2**30:.0f} GiB, run.parallel {run.parallel}, "
          f"dtype {run.dtype}{' with autocast' if run.autocast and run.dtype != 'fp32' else ''}, "
          f"activation checkpointing {'on' if run.activation_checkpointing else 'off'}, text encoders "
          f"{'freed after encoding' if run.free_text_encoders else 'kept'}\n", flush=True)
    for part in report(planner, args.gpus, memory, stages, search=not args.no_search):
        print(part.render() + "\n", flush=True)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="per-GPU peak memory, FLOPs and the fewest GPUs of both stages of a config")
    p.add_argument("config", help="YAML config file, or a shipped config name such as recipes/sd35m")
    p.add_argument("--gpus", type=int, default=8, help="number of GPUs (processes) to plan for (default 8)")
    p.add_argument("--gpu-memory", default="80GiB", help="memory of one GPU, e.g. 80GiB, 40GB (default 80GiB)")
    p.add_argument("--stage", choices=["both", "distill", "align"], default="both")
    p.add_argument("--no-search", action="store_true", help="skip the search for the fewest GPUs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set run.activation_checkpointing=false (repeatable)")
    p.set_defaults(func=plan)
