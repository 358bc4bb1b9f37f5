"""``rtdmd generate --run RUN_DIR --out OUT_DIR (--prompt TEXT ... | --prompts FILE)``: PNG files and
``metadata.jsonl`` (prompt, seed, file, steps, eta) from a run's trained generator (4-step CPS), or from its
teacher (``--teacher --steps N``: the ODE with the teacher's guidance)."""

from __future__ import annotations

import argparse

from rtdmd.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate images with a trained run",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (its generator EMA weights are used)")
    parser.add_argument("--out", required=True, help="folder for the PNG files and metadata.jsonl")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    source.add_argument("--prompts", help="prompt file: .txt (one per line) or .jsonl with a 'prompt' field")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image k uses seed + k")
    parser.add_argument("--per-prompt", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--eta", type=float, default=None, help="CPS eta (default: the run's)")
    parser.add_argument("--teacher", action="store_true", help="sample the teacher instead (eta 0, --steps)")
    parser.add_argument("--steps", type=int, default=28, help="teacher steps (with --teacher)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.set_defaults(func=run)


def run(args) -> int:
    from rtdmd.data.prompts import load_prompts
    from rtdmd.generate import generate
    from rtdmd.train.runs import load_run

    if args.per_prompt < 1 or args.batch_size < 1 or args.steps < 1:
        raise UserError("--per-prompt, --batch-size and --steps must be >= 1")
    texts = list(args.prompt) if args.prompt else list(load_prompts(args.prompts).texts)
    prompts = [t for t in texts for _ in range(args.per_prompt)]
    seeds = [args.seed + k for k in range(len(prompts))]
    config, backbone = load_run(args.run)
    if args.teacher:
        role, sigmas, eta = "teacher", backbone.teacher_sigmas(args.steps), 0.0
    else:
        role, sigmas = "generator", backbone.generator_sigmas(config.distill.step_list)
        eta = config.distill.eta if args.eta is None else args.eta
    rows = generate(backbone, prompts, seeds, args.out, role=role, sigmas=sigmas, eta=eta, batch_size=args.batch_size)
    print(f"wrote {len(rows)} images and metadata.jsonl to {args.out}")
    return 0
