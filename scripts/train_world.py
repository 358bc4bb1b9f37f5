"""Train the shapes world's teacher and reward models from scratch and write the shipped assets.

    nice -n 10 python scripts/train_world.py --out src/rtdmd/assets/shapes            # everything (< 60 min)
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
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rtdmd.functional.samplers import sample_cps
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
                   generators: list[torch.Generator]) -> torch.Tensor:
    """Euler ODE (diffusers' flow-match scheduler at ``teacher.SHIFT``) with batched CFG; images in [0, 1]."""
    n = embeds.shape[0]
    x = torch.stack([torch.randn(3, render.IMAGE_SIZE, render.IMAGE_SIZE, generator=g) for g in generators])
    context = torch.cat([null_embeds.expand(n, -1, -1), embeds])
    pooled2 = torch.cat([null_pooled.expand(n, -1), pooled])

    def velocity(x, sigma):
        v = transformer(hidden_states=torch.cat([x, x]), timestep=torch.cat([sigma, sigma]) * 1000,
                        encoder_hidden_states=context, pooled_projections=pooled2, return_dict=False)[0]
        v_null, v_cond = v.chunk(2)
        return v_null + cfg * (v_cond - v_null)

    x = sample_cps(velocity, x, uniform_sigmas(steps, shift=teacher.SHIFT), 0.0)
    return ((x + 1) / 2).clamp(0, 1)


def eval_set(records: list[dict], per_tag: int) -> list[tuple[dict, int]]:
    """``per_tag`` (record, seed) pairs per tag, cycling through the tag's prompts."""
    out = []
    for tag in prompts.TAGS:
        members = [r for r in records if r["tag"] == tag]
        out += [(members[i % len(members)], 10_000 + i) for i in range(per_tag)]
    return out


def evaluate_teacher(transformer, index, embeds, pooled, items, steps, cfg, batch=64) -> dict[str, float]:
    correct, tags = [], []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        rows = torch.tensor([index[r["prompt"]] for r, _ in chunk])
        images = sample_teacher(transformer, embeds[rows], pooled[rows], embeds[-1:], pooled[-1:], steps, cfg,
                                [torch.Generator().manual_seed(s) for _, s in chunk])
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


def train_clip(args, out: Path) -> None:
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    torch.manual_seed(args.seed)
    model = nets.ShapesCLIP(prompts.vocabulary())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed + 1)
    start = time.time()
    for step in range(1, args.clip_steps + 1):
        batch = prompts.sample_records(rng, args.reward_batch, records)
        images = augment(render.render_batch(batch, rng), rng)
        target = torch.from_numpy(satisfied(images, records)).float()
        target = target / target.sum(1, keepdim=True).clamp_min(1)
        logits = model.log_scale.exp().clamp(max=100) * model.embed_image(torch.from_numpy(images)) @ model.embed_text(texts).T
        loss = -(target * logits.log_softmax(-1)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            log(phase="clip", step=step, loss=round(loss.item(), 4), minutes=round((time.time() - start) / 60, 2))
    (out / "rewards").mkdir(parents=True, exist_ok=True)
    nets.save(model, out / "rewards" / "clip.safetensors")


def near_miss(record: dict, records: list[dict], rng: np.random.Generator) -> dict:
    """Another prompt of the same tag (a different colour, count, shape or relation) half the time, else any."""
    pool = [r for r in records if r["tag"] == record["tag"]] if rng.random() < 0.5 else records
    return pool[rng.integers(len(pool))]


def pref_batch(records, rng, n, teacher_pool=None):
    """Images, prompts and the oracle's verdicts; half the pairs are (image, its own prompt)."""
    prompts_out, metas, images = [], [], []
    for _ in range(n):
        asked = prompts.sample_records(rng, 1, records)[0]
        if teacher_pool is not None and rng.random() < 0.3:
            image, drawn = teacher_pool[rng.integers(len(teacher_pool))]
            if rng.random() < 0.5:
                asked = drawn
        else:
            drawn = asked if rng.random() < 0.5 else near_miss(asked, records, rng)
            image = render.draw(render.sample_layout(drawn, rng))
        images.append(image)
        prompts_out.append(asked["prompt"])
        metas.append(asked)
    images = augment(np.stack(images), rng)
    return images, prompts_out, oracle.score(images, metas)


def teacher_samples(out: Path, n: int, seed: int) -> list[tuple[np.ndarray, dict]]:
    """``n`` images of the shipped teacher (20 Euler steps, CFG 4) for grammar prompts, with their prompts."""
    pipe = teacher.load_pipeline(out / "teacher")
    records = prompts.grammar()
    texts = [r["prompt"] for r in records]
    embeds, pooled = encode_all(pipe, texts + [""])
    rng = np.random.default_rng(seed)
    chosen = prompts.sample_records(rng, n, records)
    rows = torch.tensor([texts.index(r["prompt"]) for r in chosen])
    images = []
    for start in range(0, n, 64):
        part = rows[start:start + 64]
        gens = [torch.Generator().manual_seed(seed * 100_000 + start + j) for j in range(len(part))]
        images.append(sample_teacher(pipe.transformer, embeds[part], pooled[part], embeds[-1:], pooled[-1:], 20, 4.0, gens))
    return list(zip(torch.cat(images).numpy(), chosen))


def train_pref(args, out: Path) -> None:
    records = prompts.grammar()
    pool = teacher_samples(out, args.pref_teacher_samples, args.seed) if args.pref_teacher_samples else None
    torch.manual_seed(args.seed)
    model = nets.ShapesPref(prompts.vocabulary())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed + 2)
    start = time.time()
    for step in range(1, args.pref_steps + 1):
        images, texts, verdict = pref_batch(records, rng, args.reward_batch, pool)
        logits = model(torch.from_numpy(images), texts)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(verdict).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            acc = ((logits > 0).numpy() == verdict).mean()
            log(phase="pref", step=step, loss=round(loss.item(), 4), acc=round(float(acc), 3),
                positives=round(float(verdict.mean()), 3), minutes=round((time.time() - start) / 60, 2))
    (out / "rewards").mkdir(parents=True, exist_ok=True)
    nets.save(model, out / "rewards" / "pref.safetensors")


# ----------------------------------------------------------------------------------------------------------


def write_prompt_files(out: Path) -> None:
    for name, records in prompts.split(prompts.grammar()).items():
        prompts.write_jsonl(records, out / f"{name}.jsonl")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/rtdmd/assets/shapes")
    p.add_argument("--phase", choices=["all", "prompts", "teacher", "rewards"], default="all")
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
    p.add_argument("--clip-steps", type=int, default=1500)
    p.add_argument("--pref-steps", type=int, default=2000)
    p.add_argument("--reward-batch", type=int, default=128)
    p.add_argument("--pref-teacher-samples", type=int, default=512)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    log(phase="start", args={k: str(v) for k, v in vars(args).items()})
    if args.phase in ("all", "prompts", "teacher", "rewards"):
        write_prompt_files(args.out)
    if args.phase in ("all", "teacher"):
        train_teacher(args, args.out)
    if args.phase in ("all", "rewards"):
        train_clip(args, args.out)
        train_pref(args, args.out)
    log(phase="done", minutes=round((time.time() - start) / 60, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
