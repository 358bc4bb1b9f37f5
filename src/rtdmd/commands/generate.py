"""``rtdmd generate``: samples of a trained generator (EMA weights), reproducible for a given seed.

Vector worlds write ``OUT/samples.npz`` (``x`` [N * prompts, d], ``prompt``, ``seed``, and where they came from:
``run``, ``stage``, ``step``, ``checkpoint``, ``checkpoint_sha256``); image models write one PNG per sample (its
``rtdmd`` text chunk holds the same record as JSON) and ``OUT/metadata.jsonl`` (prompt, seed, file, steps, eta,
and the record). ``--out`` must be new or empty, checked before the model loads. The newest checkpoint is used,
or ``--checkpoint step_N``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from rtdmd.app.outputs import check_output_dir
from rtdmd.app.runs import RunRef, load_run, open_run
from rtdmd.app.sampling import generate
from rtdmd.errors import UserError
from rtdmd.train.checkpoint import write_atomic


def png_info(record: dict) -> PngInfo:
    """A PNG text chunk ``rtdmd`` holding ``record`` as JSON (read back with ``Image.open(f).text["rtdmd"]``)."""
    info = PngInfo()
    info.add_text("rtdmd", json.dumps(record))
    return info


def save_images(images, prompts: list[str], seeds: list[int], out: Path, steps: list[float], eta: float,
                provenance: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
            name = f"{i:05d}_seed{seed}.png"
            record = {"prompt": prompt, "seed": seed, "file": name, "steps": steps, "eta": eta, **(provenance or {})}
            Image.fromarray(pixels[i]).save(out / name, pnginfo=png_info(record))
            meta.write(json.dumps(record) + "\n")


def save_samples(x, texts: list[str], seeds: list[int], out: Path, provenance: dict) -> None:
    """``OUT/samples.npz``, replaced at once (an earlier file is never half overwritten)."""
    buffer = io.BytesIO()
    records = {k: np.array("" if v is None else v) for k, v in provenance.items()}
    np.savez(buffer, x=x.cpu().numpy(), prompt=np.array(texts), seed=np.array(seeds), **records)
    write_atomic(out / "samples.npz", buffer.getvalue())


def _check(args) -> RunRef:
    """Everything that can be wrong with the arguments, before the model loads."""
    if args.num < 1:
        raise UserError(f"--num must be at least 1 sample per prompt, got {args.num}")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError(f"--eta must lie in [0, 1], got {args.eta}")
    ref = open_run(args.run, args.checkpoint)
    check_output_dir(args.out)  # new or empty: samples of two generations never mix
    return ref


def generate_command(args) -> int:
    ref = _check(args)
    loaded = load_run(ref, args.device)
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
        save_samples(x, texts, seeds, out, ref.provenance)
    else:
        save_images(x, texts, seeds, out, [round(float(s), 6) for s in sigmas], eta, ref.provenance)
    print(f"rtdmd: wrote {len(texts)} samples to {out} (from {ref.checkpoint.name} of {ref.run_dir})")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample a trained generator")
    p.add_argument("--run", type=Path, required=True, help="run directory of 'rtdmd distill' or 'rtdmd align'")
    p.add_argument("--checkpoint", default=None, metavar="step_N",
                   help="use this checkpoint of the run (default: its newest, which must be intact)")
    p.add_argument("--num", type=int, default=4, help="samples per prompt")
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: all prompts)")
    p.add_argument("--seed", type=int, default=0, help="sample j of prompt p uses seed + p * num + j")
    p.add_argument("--eta", type=float, default=None, help="CPS eta (default: the stage's training eta)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-fold", dest="fold", action="store_false",
                   help="run the LoRA adapters live instead of folding them into the weights (slower; the same "
                        "arithmetic as evaluation during training)")
    p.add_argument("--out", type=Path, required=True,
                   help="a new or empty folder")
    p.set_defaults(func=generate_command)
