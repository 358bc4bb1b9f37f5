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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rtdmd import registry
from rtdmd.app.evaluation import EvalProtocol, evaluate
from rtdmd.app.outputs import check_output_dir, check_output_file
from rtdmd.app.runs import RunRef, load_run, open_run
from rtdmd.app.sampling import sample_images
from rtdmd.app.world_metrics import evaluate_role
from rtdmd.config import Config, load_config, resolve_rewards
from rtdmd.data.prompts import PromptSet, load_prompts
from rtdmd.devices import resolve_device
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import write_atomic
from rtdmd.train.components import build_components, build_rewards
from rtdmd.worlds.base import AnalyticWorld


@dataclass
class Inputs:
    """The checked arguments of an evaluation (everything read before the model loads)."""

    config: Config
    ref: RunRef | None  # None: the teacher of --config
    vector: bool  # a world of vectors (closed-form metrics to a JSON file) rather than images
    prompts: PromptSet | None = None
    rewards: Any = None  # reward entries of --reward, or None for the run's own

    @property
    def provenance(self) -> dict[str, Any]:
        return self.ref.provenance if self.ref is not None else {"run": None, "stage": None, "step": None}


def _inputs(args) -> Inputs:
    """The run (or config), the prompt file, the reward kinds and the output path, all checked before any model
    loads."""
    if args.run is not None:
        ref = open_run(args.run, args.checkpoint)
        config = ref.config
    else:
        if args.role != "teacher":
            raise UserError("--config without --run evaluates the teacher only: add --role teacher, or pass --run")
        if args.checkpoint is not None:
            raise UserError("--checkpoint picks a checkpoint of --run: drop it with --config")
        ref, config = None, load_config(args.config, args.overrides)
    world = registry.builder("world", config.world.kind)(config.world)  # cheap: no model
    inputs = Inputs(config, ref, isinstance(world, AnalyticWorld))
    if inputs.vector:
        if args.prompts or args.reward:
            raise UserError("--prompts and --reward apply to image models; a vector world evaluates its own prompts "
                            "and rewards against closed-form targets")
        if args.out is not None:
            check_output_file(args.out)
        return inputs
    if args.out is None:
        raise UserError("image models write a folder of images and scores: give --out DIR")
    inputs.prompts = load_prompts(args.prompts) if args.prompts else None
    inputs.rewards = resolve_rewards([{"kind": k} for k in args.reward]) if args.reward else None
    check_output_dir(args.out)
    return inputs


def _components(args, inputs: Inputs):
    """The components of ``--run`` (its generator loaded), or of ``--config`` for the teacher alone."""
    if inputs.ref is not None:
        return load_run(inputs.ref, args.device).components
    return build_components(inputs.config, resolve_device(args.device))


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
    inputs = _inputs(args)
    components = _components(args, inputs)
    if inputs.vector:
        return _vector_world(args, inputs, components)
    return _image_world(args, inputs, components)


def _vector_world(args, inputs: Inputs, components) -> int:
    result = evaluate_role(components, inputs.config, role=args.role, num=args.num, seed=args.seed,
                           teacher_steps=args.teacher_steps)
    result = {**inputs.provenance, "role": args.role, **result}
    text = json.dumps(result, indent=1)
    if args.out:
        write_atomic(Path(args.out), text.encode("utf-8"))
        print(f"rtdmd: wrote {args.out}")
    else:
        print(text)
    return 0


def _image_world(args, inputs: Inputs, components) -> int:
    prompts = inputs.prompts or components.world.prompts("eval")
    rewards = components.rewards
    if inputs.rewards is not None:
        rewards = build_rewards(inputs.rewards, world=components.world, device=torch.device(args.device))
    stage = inputs.ref.stage if inputs.ref is not None else None
    sigmas, eta, guidance = _sampler(inputs.config, stage, components, args)
    backbone = components.backbone
    cfg_scale = getattr(inputs.config.backbone, "teacher_guidance", None) if args.role == "teacher" else None

    def generate(texts, seeds):
        return sample_images(backbone, texts, seeds, sigmas=sigmas, eta=eta, role=args.role, guidance=guidance)

    protocol = EvalProtocol(seeds=tuple(range(args.seed, args.seed + (args.num or 1))), steps=len(sigmas) - 1,
                            cfg=cfg_scale, resolution=None,
                            extra={**inputs.provenance, "role": args.role, "eta": eta})
    summary = evaluate(generate, prompts, rewards, protocol, args.out, prompt_file=args.prompts)
    means = {name: round(s["mean"], 4) for name, s in summary["scores"].items()}
    print(f"rtdmd: wrote {args.out} ({summary['protocol']['images']} images): {means}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run (or a teacher) on its world or a prompt set")
    p.add_argument("--run", type=Path, action="append", default=None,
                   help="run directory of 'rtdmd distill' or 'rtdmd align' (repeatable with --benchmark)")
    p.add_argument("--checkpoint", default=None, metavar="step_N",
                   help="use this checkpoint of --run (default: its newest, which must be intact)")
    p.add_argument("--config", default=None, help="instead of --run: a config whose teacher to evaluate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None,
                   help="vector worlds: JSON file (default: print); images: a new or empty DIR")
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
