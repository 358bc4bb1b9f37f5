"""Train the shapes world's teacher and reward models from scratch and write the shipped assets.

    nice -n 10 python scripts/train_world.py --out src/rtdmd/assets/shapes            # everything (~56 min, 1 core)
    python scripts/train_world.py --phase rewards --out src/rtdmd/assets/shapes       # reward models only

Teacher (phase ``teacher``): a tiny ``SD3Transformer2DModel`` in pixel space trained by rectified-flow
matching (spec section 0: ``x = (1-s) x0 + s eps``, target ``v = eps - x0``, timestep ``1000 s``, ``s`` drawn
logit-normal(0, 1) as in SD3) on images rendered from the whole grammar (uniform tag, uniform prompt within
the tag; the train / eval prompt split concerns the RL stage, as for a real teacher), with the prompt dropped
for 10% of the samples (classifier-free guidance). Conditioning comes from the stock
``StableDiffusion3Pipeline.encode_prompt`` of the frozen random text encoders, cached once for the finite
grammar. Training loss is a poor guide to sample quality, so every ``--eval-every`` steps the EMA weights
sample a fixed set of train-split prompts (Euler, ``--eval-steps`` steps, CFG ``--eval-cfg``) and the oracle
scores them; the best EMA checkpoint is the shipped one.

Rewards (phase ``rewards``): the contrastive model (soft targets = every prompt of the grammar an image
satisfies) and the preference model (binary: the oracle's verdict on rendered, perturbed and teacher-generated
images for matched and near-miss prompts), both on augmented renders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rtdmd.functional.samplers import rollout
from rtdmd.functional.schedules import uniform_sigmas
from rtdmd.worlds.shapes import nets, oracle, prompts, render, teacher


def log(**fields) -> None:
    print(json.dumps(fields), flush=True)


# ----------------------------------------------------------------------------------------------------------
# Teacher


def encode_all(pipe, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stock ``encode_prompt`` of every text: ``(N, L, 128)`` and pooled ``(N, 64)``."""
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(texts, None, None, device=torch.device("cpu"),
                                                  do_classifier_free_guidance=False,
                                                  max_sequence_length=teacher.MAX_SEQUENCE_LENGTH)
    return embeds.float(), pooled.float()


@torch.no_grad()
def sample_teacher(transformer, embeds, pooled, null_embeds, null_pooled, steps: int, cfg: float,
                   generators: list[torch.Generator], sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """Euler ODE with batched CFG, initial noise drawn per sample as the pipeline does; images in [0, 1].
    ``sigmas`` default: ``steps`` levels evenly spaced from 1 to 1/steps at ``teacher.SHIFT`` (the training-time
    evaluation); :func:`pipeline_sigmas` gives the stock pipeline's own grid."""
    n = embeds.shape[0]
    x = torch.stack([torch.randn(3, render.IMAGE_SIZE, render.IMAGE_SIZE, generator=g) for g in generators])
    context = torch.cat([null_embeds.expand(n, -1, -1), embeds])
    pooled2 = torch.cat([null_pooled.expand(n, -1), pooled])

    def velocity(x, sigma, _):
        v = transformer(hidden_states=torch.cat([x, x]), timestep=torch.cat([sigma, sigma]) * 1000,
                        encoder_hidden_states=context, pooled_projections=pooled2, return_dict=False)[0]
        v_null, v_cond = v.chunk(2)
        return v_null + cfg * (v_cond - v_null)

    sigmas = uniform_sigmas(steps, shift=teacher.SHIFT) if sigmas is None else sigmas
    x = rollout(velocity, x, sigmas, 0.0)
    return ((x + 1) / 2).clamp(0, 1)


def pipeline_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The levels ``StableDiffusion3Pipeline`` walks for ``steps`` steps with a scheduler of this ``shift``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float()


def eval_set(records: list[dict], per_tag: int) -> list[tuple[dict, int]]:
    """``per_tag`` (record, seed) pairs per tag, cycling through the tag's prompts."""
    out = []
    for tag in prompts.TAGS:
        members = [r for r in records if r["tag"] == tag]
        out += [(members[i % len(members)], 10_000 + i) for i in range(per_tag)]
    return out


def evaluate_teacher(transformer, index, embeds, pooled, items, steps, cfg, batch=64, sigmas=None) -> dict[str, float]:
    correct, tags = [], []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        rows = torch.tensor([index[r["prompt"]] for r, _ in chunk])
        images = sample_teacher(transformer, embeds[rows], pooled[rows], embeds[-1:], pooled[-1:], steps, cfg,
                                [torch.Generator().manual_seed(s) for _, s in chunk], sigmas)
        correct += oracle.score(images.numpy(), [r for r, _ in chunk]).tolist()
        tags += [r["tag"] for r, _ in chunk]
    return oracle.accuracy(correct, tags)


def train_teacher(args, out: Path) -> None:
    torch.manual_seed(args.seed)
    pipe = teacher.new_pipeline(args.seed)
    transformer = pipe.transformer.train()
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    index = {t: i for i, t in enumerate(texts)}
    embeds, pooled = encode_all(pipe, texts + [""])  # last row: the empty prompt (CFG's unconditional input)
    items = eval_set(prompts.split(records)["train"], args.eval_per_tag)

    params = [p for p in transformer.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    noise_gen = torch.Generator().manual_seed(args.seed)
    best, start, folder = -1.0, time.time(), out / "teacher"
    for step in range(1, args.steps + 1):
        # Data: a tag-uniform batch of prompts, their rendered images, 10% prompt dropout.
        batch = prompts.sample_records(rng, args.batch, records)
        x0 = torch.from_numpy(render.render_batch(batch, rng)) * 2 - 1
        rows = torch.tensor([index[r["prompt"]] for r in batch])
        rows[torch.from_numpy(rng.random(args.batch) < args.cfg_dropout)] = len(texts)
        # Rectified flow: x = (1 - s) x0 + s eps, target v = eps - x0, s ~ logit-normal(0, 1).
        sigma = torch.sigmoid(torch.randn(args.batch, generator=noise_gen))
        eps = torch.randn(x0.shape, generator=noise_gen)
        s = sigma.view(-1, 1, 1, 1)
        v = transformer(hidden_states=(1 - s) * x0 + s * eps, timestep=sigma * 1000, encoder_hidden_states=embeds[rows],
                        pooled_projections=pooled[rows], return_dict=False)[0]
        loss = (v - (eps - x0)).square().mean()
        # Optimizer step with linear warm-up and gradient clipping.
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        # Update EMA (warm-up form: early steps average over fewer iterates).
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        if step % 50 == 0:
            log(phase="teacher", step=step, loss=round(loss.item(), 4), minutes=round((time.time() - start) / 60, 2))
        # Evaluate the EMA weights with the oracle; keep the best checkpoint.
        if step % args.eval_every == 0 or step == args.steps:
            live = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, e in zip(params, ema):
                    p.copy_(e)
            transformer.eval()
            acc = evaluate_teacher(transformer, index, embeds, pooled, items, args.eval_steps, args.eval_cfg)
            log(phase="teacher_eval", step=step, minutes=round((time.time() - start) / 60, 2),
                **{k: round(v, 3) for k, v in acc.items()})
            if acc["overall"] > best:
                best = acc["overall"]
                write_teacher(pipe, folder)
                log(phase="teacher_saved", step=step, overall=round(best, 3))
            with torch.no_grad():
                for p, l in zip(params, live):
                    p.copy_(l)
            transformer.train()
    log(phase="teacher_done", best=best, minutes=round((time.time() - start) / 60, 2))


def write_teacher(pipe, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


# ----------------------------------------------------------------------------------------------------------
# Reward models


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild degradations seen in generated images: Gaussian noise, blur, a brightness shift, and now and then
    a small patch painted background (which can break a silhouette: the oracle's label follows)."""
    from scipy.ndimage import gaussian_filter

    out = images.copy()
    for i in range(len(out)):
        if rng.random() < 0.5:
            out[i] = gaussian_filter(out[i], sigma=(0, *(2 * [rng.uniform(0.3, 0.9)])))
        if rng.random() < 0.3:
            y, x = rng.integers(0, render.IMAGE_SIZE - 4, size=2)
            out[i][:, y:y + 4, x:x + 4] = np.asarray(render.BACKGROUND, np.float32)[:, None, None]
        out[i] += rng.uniform(-0.05, 0.05)
        out[i] += rng.normal(0, rng.uniform(0, 0.08), out[i].shape).astype(np.float32)
    return np.clip(out, 0, 1)


def satisfied(images: np.ndarray, records: list[dict]) -> np.ndarray:
    """``(B, N)`` bool: which of the grammar's ``records`` each image satisfies, by the oracle."""
    blobs = [oracle.detect(img) for img in images]
    return np.array([[oracle.check(b, r) for r in records] for b in blobs])


def reward_data(args, out: Path, records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed training set for both reward models: augmented renders of tag-uniform prompts, half of them
    drawn for a near-miss prompt of the same tag, plus teacher samples; with ``(N, 90)`` oracle verdicts
    against every prompt of the grammar and the index of the prompt each image was made for."""
    rng = np.random.default_rng(args.seed + 1)
    asked = prompts.sample_records(rng, args.reward_images, records)
    drawn = [r if rng.random() < 0.5 else near_miss(r, records, rng) for r in asked]
    images = augment(render.render_batch(drawn, rng), rng)
    made_for = [records.index(r) for r in asked]
    if args.teacher_samples:
        samples, chosen = teacher_samples(out, args.teacher_samples, args.seed)
        images = np.concatenate([images, augment(samples, rng)])
        made_for += [records.index(r) for r in chosen]
    return images, satisfied(images, records), np.asarray(made_for)


def near_miss(record: dict, records: list[dict], rng: np.random.Generator) -> dict:
    """Another prompt of the same tag (a different colour, count, shape or relation)."""
    pool = [r for r in records if r["tag"] == record["tag"]]
    return pool[rng.integers(len(pool))]


def teacher_samples(out: Path, n: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """``n`` images of the trained teacher (20 Euler steps, CFG 4) for tag-uniform grammar prompts."""
    pipe = teacher.load_pipeline(out / "teacher")
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    embeds, pooled = encode_all(pipe, texts + [""])
    rng = np.random.default_rng(seed + 3)
    chosen = prompts.sample_records(rng, n, records)
    rows = torch.tensor([texts.index(r["prompt"]) for r in chosen])
    images = []
    for start in range(0, n, 64):
        part = rows[start:start + 64]
        gens = [torch.Generator().manual_seed(seed * 100_000 + start + j) for j in range(len(part))]
        images.append(sample_teacher(pipe.transformer, embeds[part], pooled[part], embeds[-1:], pooled[-1:], 20, 4.0, gens))
    return torch.cat(images).numpy(), chosen


def train_clip(args, out: Path, data) -> None:
    """Image -> text cross-entropy over the whole grammar, with soft targets spread evenly over every prompt
    the image satisfies (an image of "a red circle" is also "a circle" and "one circle")."""
    images, verdicts, _ = data
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    keep = verdicts.any(1)  # images satisfying no prompt (broken silhouettes) have no target
    images, verdicts = torch.from_numpy(images[keep]), torch.from_numpy(verdicts[keep]).float()
    targets = verdicts / verdicts.sum(1, keepdim=True)
    torch.manual_seed(args.seed)
    model = nets.ShapesCLIP(prompts.vocabulary())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed + 4)
    start = time.time()
    for step in range(1, args.clip_steps + 1):
        rows = torch.randint(len(images), (args.reward_batch,), generator=gen)
        scale = model.log_scale.exp().clamp(max=100)
        logits = scale * model.embed_image(images[rows]) @ model.embed_text(texts).T
        loss = -(targets[rows] * logits.log_softmax(-1)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            log(phase="clip", step=step, loss=round(loss.item(), 4), minutes=round((time.time() - start) / 60, 2))
    (out / "rewards").mkdir(parents=True, exist_ok=True)
    nets.save(model, out / "rewards" / "clip.safetensors")


def train_pref(args, out: Path, data) -> None:
    """Binary cross-entropy on the oracle's verdict for (image, prompt) pairs: the prompt the image was made
    for half the time, else a near-miss of the same tag or any prompt."""
    images, verdicts, made_for = data
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    same_tag = [[j for j, q in enumerate(records) if q["tag"] == r["tag"]] for r in records]
    images = torch.from_numpy(images)
    torch.manual_seed(args.seed)
    model = nets.ShapesPref(prompts.vocabulary())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed + 2)
    start = time.time()
    for step in range(1, args.pref_steps + 1):
        rows = rng.integers(len(images), size=args.reward_batch)
        choice = rng.random(args.reward_batch)
        asked = [int(made_for[i]) if c < 0.5 else
                 (same_tag[made_for[i]][rng.integers(len(same_tag[made_for[i]]))] if c < 0.8 else rng.integers(len(records)))
                 for i, c in zip(rows, choice)]
        label = torch.from_numpy(verdicts[rows, asked]).float()
        logits = model(images[rows], [texts[j] for j in asked])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            acc = ((logits > 0).float() == label).float().mean().item()
            log(phase="pref", step=step, loss=round(loss.item(), 4), acc=round(acc, 3),
                positives=round(label.mean().item(), 3), minutes=round((time.time() - start) / 60, 2))
    (out / "rewards").mkdir(parents=True, exist_ok=True)
    nets.save(model, out / "rewards" / "pref.safetensors")


# ----------------------------------------------------------------------------------------------------------
# Measurement of the shipped teacher


def measure(args, out: Path) -> None:
    """Choose the sampling shift and CFG scale on train-split prompts (28 steps), write the shift into the
    folder's scheduler config, then measure per-tag oracle accuracy on the held-out prompts with the stock
    pipeline at 28 and 50 steps (and naive 4-step sampling) into ``teacher_metrics.json``."""
    folder = out / "teacher"
    pipe = teacher.load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    index = {t: i for i, t in enumerate(texts)}
    embeds, pooled = encode_all(pipe, texts + [""])
    split = prompts.split(records)
    tune_items = eval_set(split["train"], args.measure_per_tag)
    grid = {}
    for shift in args.shifts:
        for cfg in args.cfgs:
            acc = evaluate_teacher(pipe.transformer, index, embeds, pooled, tune_items, 28, cfg,
                                   sigmas=pipeline_sigmas(28, shift))
            grid[f"shift={shift},cfg={cfg}"] = acc
            log(phase="measure_tune", shift=shift, cfg=cfg, **{k: round(v, 3) for k, v in acc.items()})
    best = max(grid, key=lambda k: grid[k]["overall"])
    shift, cfg = (float(part.split("=")[1]) for part in best.split(","))
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["shift"] = shift
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    pipe = teacher.load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    held_out = [(r, 20_000 + k) for r in split["eval"] for k in range(args.measure_seeds)]
    results = {"shift": shift, "cfg": cfg, "tuning": grid}
    for steps in (28, 50, 4):
        correct = []
        for start in range(0, len(held_out), 64):
            chunk = held_out[start:start + 64]
            latents = pipe([r["prompt"] for r, _ in chunk], num_inference_steps=steps, guidance_scale=cfg,
                           output_type="latent", max_sequence_length=teacher.MAX_SEQUENCE_LENGTH,
                           generator=[torch.Generator().manual_seed(s) for _, s in chunk]).images
            correct += oracle.score(((latents + 1) / 2).clamp(0, 1).numpy(), [r for r, _ in chunk]).tolist()
        acc = oracle.accuracy(correct, [r["tag"] for r, _ in held_out])
        results[f"eval_{steps}_steps"] = acc
        log(phase="measure", steps=steps, cfg=cfg, shift=shift, **{k: round(v, 3) for k, v in acc.items()})
    (out / "teacher_metrics.json").write_text(json.dumps(results, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------


def write_prompt_files(out: Path) -> None:
    for name, records in prompts.split(prompts.grammar()).items():
        prompts.write_jsonl(records, out / f"{name}.jsonl")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/rtdmd/assets/shapes")
    p.add_argument("--phase", choices=["all", "prompts", "teacher", "measure", "rewards"], default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--eval-per-tag", type=int, default=12)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--eval-cfg", type=float, default=4.0)
    p.add_argument("--shifts", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--cfgs", type=float, nargs="+", default=[2.0, 3.0, 4.5])
    p.add_argument("--measure-per-tag", type=int, default=16)
    p.add_argument("--measure-seeds", type=int, default=4)
    p.add_argument("--reward-images", type=int, default=12000)
    p.add_argument("--teacher-samples", type=int, default=256)
    p.add_argument("--clip-steps", type=int, default=3000)
    p.add_argument("--pref-steps", type=int, default=3000)
    p.add_argument("--reward-batch", type=int, default=64)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    log(phase="start", args={k: str(v) for k, v in vars(args).items()})
    write_prompt_files(args.out)
    if args.phase in ("all", "teacher"):
        train_teacher(args, args.out)
    if args.phase in ("all", "measure"):
        measure(args, args.out)
    if args.phase in ("all", "rewards"):
        data = reward_data(args, args.out, prompts.grammar())
        log(phase="reward_data", images=len(data[0]), minutes=round((time.time() - start) / 60, 2))
        train_clip(args, args.out, data)
        train_pref(args, args.out, data)
    log(phase="done", minutes=round((time.time() - start) / 60, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
