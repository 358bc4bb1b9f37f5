"""``rtdmd generate``: samples of a trained generator (EMA weights), reproducible for a given seed.

Vector worlds write ``OUT/samples.npz`` (``x`` [N * prompts, d], ``prompt``, ``seed``); image models write one
PNG per sample and ``OUT/metadata.jsonl`` (prompt, seed, file, steps, eta)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from rtdmd.app.runs import load_run
from rtdmd.app.sampling import generate
from rtdmd.errors import UserError


def save_images(images, prompts: list[str], seeds: list[int], out: Path, steps: list[float], eta: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
            name = f"{i:05d}_seed{seed}.png"
            Image.fromarray(pixels[i]).save(out / name)
            meta.write(json.dumps({"prompt": prompt, "seed": seed, "file": name, "steps": steps, "eta": eta}) + "\n")


def generate_command(args) -> int:
    if args.num < 1:
        raise UserError(f"--num must be at least 1 sample per prompt, got {args.num}")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError(f"--eta must lie in [0, 1], got {args.eta}")
    loaded = load_run(args.run, args.device)
    backbone, world = loaded.components.backbone, loaded.components.world
    if args.fold and hasattr(backbone, "fold"):
        backbone.fold("generator")  # a sampling-only process: the base's cost per step, not base + adapters
    prompts = args.prompt or list(world.prompts("eval").texts)
    stage_cfg = loaded.stage_config
    sigmas = backbone.generator_sigmas(stage_cfg.step_list)
    eta = stage_cfg.eta if args.eta is None else args.eta
    x, seeds = generate(backbone, prompts, args.num, args.seed, sigmas=sigmas, eta=eta)
    texts = [p for p in prompts for _ in range(args.num)]
    out = Path(args.out)
    if x.ndim == 2:
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "samples.npz", x=x.cpu().numpy(), prompt=np.array(texts), seed=np.array(seeds))
    else:
        save_images(x, texts, seeds, out, [round(float(s), 6) for s in sigmas], eta)
    print(f"rtdmd: wrote {len(texts)} samples to {out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample a trained generator")
    p.add_argument("--run", type=Path, required=True, help="run directory of 'rtdmd distill' or 'rtdmd align'")
    p.add_argument("--num", type=int, default=4, help="samples per prompt")
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: all prompts)")
    p.add_argument("--seed", type=int, default=0, help="sample j of prompt p uses seed + p * num + j")
    p.add_argument("--eta", type=float, default=None, help="CPS eta (default: the stage's training eta)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-fold", dest="fold", action="store_false",
                   help="run the LoRA adapters live instead of folding them into the weights (slower; the same "
                        "arithmetic as evaluation during training)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=generate_command)
