"""``rtdmd evaluate``: evaluate a trained run's generator (or the teacher of a run or a config).

- Vector worlds (the analytic world): the world's closed-form metrics as JSON (``--out FILE.json`` or stdout).
- Image models: generate every prompt of a prompt set for ``--num`` seeds, score with the rewards, and write
  PNGs, per-image ``scores.jsonl`` and ``summary.json`` with the protocol into ``--out DIR``
  (:mod:`rtdmd.app.evaluation`).
- The paper's table: ``--benchmark NAME`` (repeatable) with one or more ``--run``: the teacher and every run's
  generator on the named prompt sets, as ``table.md``, ``table.json`` and ``index.html`` in ``--out DIR``
  (:mod:`rtdmd.app.benchmark_table`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rtdmd.app.evaluation import EvalProtocol, evaluate
from rtdmd.app.runs import load_run
from rtdmd.app.sampling import sample_images
from rtdmd.app.world_metrics import evaluate_role
from rtdmd.config import load_config, resolve_rewards
from rtdmd.data.prompts import load_prompts
from rtdmd.devices import resolve_device
from rtdmd.errors import UserError
from rtdmd.train.components import build_components, build_rewards


def _components(args):
    """(config, stage, step, components) of ``--run``, or of ``--config`` for the teacher alone."""
    if args.run is not None:
        loaded = load_run(args.run, args.device)
        return loaded.config, loaded.stage, loaded.step, loaded.components
    if args.role != "teacher":
        raise UserError("--config without --run evaluates the teacher only: add --role teacher, or pass --run")
    config = load_config(args.config, args.overrides)
    return config, None, None, build_components(config, resolve_device(args.device))


def _sampler(config, stage, components, args):
    """Levels, eta and guidance of the role to evaluate."""
    backbone = components.backbone
    if args.role == "teacher":
        return backbone.teacher_sigmas(args.teacher_steps), 0.0, None
    stage_cfg = config.align if stage == "align" else config.distill
    return backbone.generator_sigmas(stage_cfg.step_list), stage_cfg.eta, None


def evaluate_command(args) -> int:
    if args.benchmark:
        from rtdmd.app.benchmark_table import table_command

        return table_command(args)
    if len(args.run or ()) > 1 or args.cfg is not None or args.limit is not None:
        raise UserError("several --run, --cfg and --limit belong to the comparison table: name its prompt sets "
                        "with --benchmark")
    args.run = args.run[0] if args.run else None
    if (args.run is None) == (args.config is None):
        raise UserError("give exactly one of --run RUN_DIR or --config CONFIG")
    if (args.num is not None and args.num < 1) or args.teacher_steps < 1:
        raise UserError(f"--num and --teacher-steps must be at least 1, got {args.num} and {args.teacher_steps}")
    config, stage, step, components = _components(args)
    if len(components.backbone.sample_shape) == 1:
        return _vector_world(args, config, stage, step, components)
    return _image_world(args, config, stage, step, components)


def _vector_world(args, config, stage, step, components) -> int:
    if args.prompts or args.reward:
        raise UserError("--prompts and --reward apply to image models; a vector world evaluates its own prompts "
                        "and rewards against closed-form targets")

    result = evaluate_role(components, config, role=args.role, num=args.num, seed=args.seed,
                           teacher_steps=args.teacher_steps)
    result = {"run": None if args.run is None else str(args.run), "stage": stage, "step": step, "role": args.role,
              **result}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"rtdmd: wrote {args.out}")
    else:
        print(text)
    return 0


def _image_world(args, config, stage, step, components) -> int:
    if args.out is None:
        raise UserError("image models write a folder of images and scores: give --out DIR")
    prompts = load_prompts(args.prompts) if args.prompts else components.world.prompts("eval")
    rewards = components.rewards
    if args.reward:
        rewards = build_rewards(resolve_rewards([{"kind": k} for k in args.reward]),
                                   world=components.world, device=torch.device(args.device))
    sigmas, eta, guidance = _sampler(config, stage, components, args)
    backbone = components.backbone
    cfg_scale = getattr(config.backbone, "teacher_guidance", None) if args.role == "teacher" else None

    def generate(texts, seeds):
        return sample_images(backbone, texts, seeds, sigmas=sigmas, eta=eta, role=args.role, guidance=guidance)

    protocol = EvalProtocol(seeds=tuple(range(args.seed, args.seed + (args.num or 1))), steps=len(sigmas) - 1,
                            cfg=cfg_scale, resolution=None,
                            extra={"run": None if args.run is None else str(args.run), "stage": stage,
                                   "checkpoint_step": step, "role": args.role, "eta": eta})
    summary = evaluate(generate, prompts, rewards, protocol, args.out, prompt_file=args.prompts)
    means = {name: round(s["mean"], 4) for name, s in summary["scores"].items()}
    print(f"rtdmd: wrote {args.out} ({summary['protocol']['images']} images): {means}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run (or a teacher) on its world or a prompt set")
    p.add_argument("--run", type=Path, action="append", default=None,
                   help="run directory of 'rtdmd distill' or 'rtdmd align' (repeatable with --benchmark)")
    p.add_argument("--config", default=None, help="instead of --run: a config whose teacher to evaluate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None, help="vector worlds: JSON file (default: print); images: DIR")
    p.add_argument("--role", choices=["generator", "teacher"], default="generator")
    p.add_argument("--num", type=int, default=None,
                   help="samples per prompt (vector worlds default: run.eval_samples; images: 1 seed)")
    p.add_argument("--seed", type=int, default=1234, help="first seed")
    p.add_argument("--prompts", type=Path, default=None, help="images: a .txt or .jsonl prompt set "
                                                               "(default: the world's held-out prompts)")
    p.add_argument("--reward", action="append", default=None, metavar="KIND",
                   help="images: score with these reward kinds instead of the run's rewards (repeatable); the "
                        "table also takes NAME=KIND, NAME matching a paper metric (clipscore, geneval, ...)")
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--benchmark", action="append", default=None, metavar="NAME",
                   help="the comparison table: a registered prompt set (rtdmd prompts list), 'world', or a prompt "
                        "file; repeatable; the teacher and each --run's generator become columns")
    p.add_argument("--cfg", type=float, default=None, help="table: the teacher's guidance (default: the config's)")
    p.add_argument("--limit", type=int, default=None, help="table: only the first N prompts of each set")
    p.add_argument("--grid", type=int, default=4, help="table: prompts shown per set in index.html")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=evaluate_command)
