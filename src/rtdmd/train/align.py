"""Stage 2, RTDMD (spec section 5): distribution matching to the teacher plus reward RL, starting from a
stage-1 run. One iteration (5.9): rollout (no grad) -> rewards -> fake-score update -> advantages -> per
micro-batch: SubGRPO policy loss on the trained steps + final-step loss (DM + reward back-propagation) -> one
optimiser step -> EMA."""

from __future__ import annotations

from pathlib import Path

import torch

from rtdmd.backbones.base import TRAINED_ROLES
from rtdmd.config import Config
from rtdmd.errors import UserError
from rtdmd.functional import grpo, reward_bp
from rtdmd.rng import Streams
from rtdmd.train import preflight
from rtdmd.train import state as train_state
from rtdmd.train import steps
from rtdmd.train.checkpoint import latest_checkpoint, load_checkpoint
from rtdmd.train.loop import start_training
from rtdmd.train.optim import clip_and_step
from rtdmd.train.parallel import distribute, init_distributed
from rtdmd.train.runs import build_components, load_into, prepare_run_dir, read_run_config, role_tensors, stage_fingerprint
from rtdmd.train.signals import stop_on_signals

STAGE = "align"


def check_stage1(from_dir: Path, config: Config) -> tuple[Config, Path]:
    """The config and the checkpoint of the stage-1 run a stage-2 run starts from (no tensors loaded)."""
    stage1_config, info = read_run_config(from_dir)
    if info.get("stage") != "distill":
        raise UserError(f"--from {from_dir} is a stage-2 run: pass the run directory of 'rtdmd distill'")
    if stage1_config.fingerprint("world", "backbone") != config.fingerprint("world", "backbone"):
        raise UserError(f"--from {from_dir} was trained with another world or backbone: use the same world and "
                        f"backbone sections as its config.yaml")
    checkpoint = latest_checkpoint(Path(from_dir) / "checkpoints")
    if checkpoint is None:
        raise UserError(f"--from {from_dir} holds no complete checkpoint")
    return stage1_config, checkpoint


def load_stage1(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The stage-1 result a stage-2 run starts from: its EMA generator and its fake score, in host memory (they
    are copied into the model once, and otherwise only written to checkpoints)."""
    tensors, _ = load_checkpoint(checkpoint, "cpu")
    return {"stage1_generator": role_tensors(tensors, "ema"), "stage1_fake": role_tensors(tensors, "fake")}


def run(config: Config, run_dir: str | Path, from_dir: str | Path, *, resume: bool = False, evaluate=None) -> dict:
    """Train stage 2 into ``run_dir`` from the stage-1 run ``from_dir``; returns the last logged metrics."""
    cfg = config.align
    stage1_config, stage1_checkpoint = check_stage1(Path(from_dir), config)
    preflight.check_align(config, stage1_config)
    dist, device = init_distributed(config.run.device, config.run.parallel)
    total = cfg.samples_per_iteration
    run_dir = Path(run_dir)
    stage1 = load_stage1(stage1_checkpoint)
    checkpoint = prepare_run_dir(run_dir, config, STAGE, resume, dist.is_main, {"from": str(Path(from_dir).resolve())})
    parts = build_components(config, device)
    backbone, rewards, prompts = parts.backbone, parts.rewards, parts.world.prompts("align")
    sigmas = backbone.generator_sigmas(cfg.step_list)
    n_stochastic = len(sigmas) - 2

    # Start from the stage-1 result, folded into the model; fresh trainable tensors (5).
    load_into(backbone.trainable("generator"), stage1["stage1_generator"], "stage-1 generator")
    load_into(backbone.trainable("fake"), stage1["stage1_fake"], "stage-1 fake")
    backbone.start_stage2()
    distribute(backbone, TRAINED_ROLES, dist)  # replicated or sharded over the ranks
    t = start_training(config, cfg, STAGE, "stage 2 (RTDMD)", ("reward", "reward/total"), run_dir, checkpoint, parts, dist,
                       device, evaluate)
    gen_params, fake_params, optimizers, ema, guard, book = (t.gen_params, t.fake_params, t.optimizers, t.ema,
                                                             t.guard, t.book)
    updates = int(t.saved.get("updates", 0))  # optimiser steps so far (the EMA runs every ema_every of them)
    if checkpoint is None and evaluate is not None:  # the stage-1 result: the starting point of every curve
        book.evaluate_ema(0)
    if rewards.differentiable == [] and cfg.bp and dist.is_main:
        print("rtdmd: note: no differentiable reward, so the final step gets no reward back-propagation")

    streams = Streams(config.run.seed)
    local = list(dist.shard(total))
    cond_all = backbone.encode(list(prompts.texts))
    fingerprint = stage_fingerprint(config, STAGE)
    micro = cfg.micro_batch or len(local)

    def save(step: int) -> None:
        tensors = train_state.training_tensors(backbone, ema, optimizers, stage1)
        train_state.write(run_dir, step, tensors, {"stage": STAGE, "fingerprint": fingerprint, "updates": updates,
                                                   "skipped_steps": guard.skipped, "world_size": dist.world_size},
                          dist.is_main)

    book.save = save

    with stop_on_signals() as stop:
        for it in book.bar:
            # Groups: prompts_per_iteration prompts, each K times; sample j belongs to group j // K.
            order = torch.randperm(len(prompts), generator=streams.generator("groups", it)).tolist()
            group_prompt = [order[g % len(order)] for g in range(cfg.prompts_per_iteration)]
            prompt_of = [group_prompt[j // cfg.group_size] for j in local]
            cond = {k: v[torch.as_tensor(prompt_of, device=v.device)] for k, v in cond_all.items()}
            texts, meta = [prompts.texts[p] for p in prompt_of], [prompts.metadata[p] for p in prompt_of]
            draw = steps.Draw(streams, it, local, tuple(backbone.sample_shape), device)
            trained = grpo.choose_step_subset(n_stochastic, cfg.subset_size, streams.generator("subset", it))

            traj = group_rollout(backbone, cond, draw, cfg.group_size, sigmas, cfg.eta, trained, cfg.log_prob)

            # Rewards of the whole global batch.
            scores = rewards.score(backbone.decode(traj.final), texts, meta)
            global_scores = {name: dist.all_gather(s) for name, s in scores.items()}
            metrics: dict = {f"reward/{n}": s.mean().item() for n, s in global_scores.items()}
            metrics["reward/total"] = rewards.total(global_scores).mean().item()
            metrics["trained_steps"] = "".join(map(str, trained))
            if not guard.record("reward", guard.finite(torch.stack(list(global_scores.values())).sum(0))):
                if book.end_of_iteration(it + 1, metrics, stop):
                    break
                continue

            # Fake-score update on the final samples at s = 0 (5.7).
            for r in range(cfg.fake_update_ratio):
                loss, m = steps.fake_score_loss(backbone, cond, traj.final, 0.0, draw.fork(r), eta=cfg.eta,
                                                weighting=cfg.fake_weighting, gamma=cfg.fake_consistency_gamma,
                                                estimator="two_sample", delta_max=200, sigma_range=cfg.dm_sigma_range)
                metrics.update(m)
                if guard.backward(loss.mean(), "fake loss"):
                    dist.sync_grads(fake_params.values())
                    metrics["fake_grad_norm"] = clip_and_step(optimizers["fake"], fake_params, cfg.fake.grad_clip)
                else:
                    optimizers["fake"].zero_grad(set_to_none=True)

            # Advantages over the global batch (5.4).
            if cfg.advantages == "paper":
                adv_all = grpo.advantages_paper(global_scores, rewards.weights, cfg.group_size, clip=cfg.advantage_clip)
            else:
                adv_all = grpo.advantages_exact(global_scores, rewards.weights, cfg.group_size, config.beta)
            advantages = adv_all[torch.as_tensor(local)].to(device)
            metrics["advantage_abs"] = adv_all.abs().mean().item()

            # Generator update: per micro-batch, policy loss + final-step loss; one optimiser step (5.5-5.6, 5.8).
            ok, parts_sum = True, {}
            for begin in range(0, len(local), micro):
                rows = slice(begin, begin + micro)
                loss_parts, m = generator_losses(backbone, rewards, cfg, config.beta, sigmas, trained,
                                              {k: v[rows] for k, v in cond.items()}, traj.rows(rows),
                                              advantages[rows], texts[rows], meta[rows],
                                              steps.Draw(streams, it, local[rows], tuple(backbone.sample_shape), device))
                loss = sum(loss_parts.values())
                if not guard.finite(loss):
                    ok = False
                    break
                (loss.sum() / len(local)).backward()
                share = len(range(*rows.indices(len(local)))) / len(local)
                for name, value in [*((f"loss/{k}", v.sum().item() / len(local)) for k, v in loss_parts.items()),
                                    *((k, v * share) for k, v in m.items())]:
                    parts_sum[name] = parts_sum.get(name, 0.0) + value
            if guard.record("generator loss", ok):
                dist.sync_grads(gen_params.values())
                metrics["generator_grad_norm"] = clip_and_step(optimizers["generator"], gen_params, cfg.generator.grad_clip)
                updates += 1
                if updates % cfg.ema_every == 0:
                    ema.update(gen_params)
                metrics.update(parts_sum)
            else:
                optimizers["generator"].zero_grad(set_to_none=True)
            if book.end_of_iteration(it + 1, metrics, stop):
                break
    return book.finish(stop)


def group_rollout(backbone, cond, draw: steps.Draw, group_size: int, sigmas, eta: float, trained, log_prob: str):
    """The rollout of 5.1 for this rank's rows ``draw.indices`` (global sample j is in group j // K): fresh
    per-sample noise on the trained steps, one noise per group on the others (common random numbers, 5.3)."""
    groups = [j // group_size for j in draw.indices]

    def noise(i: int) -> torch.Tensor:
        if i in trained:
            return draw.randn("step_noise", i)
        return draw.streams.randn(("shared_noise", i, draw.step), groups, draw.shape, device=draw.device)

    return steps.rl_rollout(backbone, cond, draw.randn("x_init"), sigmas, eta, noise, trained, log_prob)


def generator_losses(backbone, rewards, cfg, beta: float, sigmas, trained, cond, traj: steps.Trajectory,
                     advantages, texts, meta, draw: steps.Draw) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Per-sample terms of the stage-2 generator loss for one micro-batch, already weighted, and metrics."""
    out, metrics = {}, {}
    if cfg.policy:
        loss, m = steps.policy_loss(backbone, cond, traj, sigmas, cfg.eta, trained, advantages,
                                    log_prob=cfg.log_prob, clip_range=cfg.ppo_clip, reduction=cfg.policy_reduction)
        out["policy"] = cfg.policy_weight * loss
        metrics.update(m)
    differentiable = rewards.differentiable
    bp = cfg.bp and bool(differentiable)
    if not (cfg.dm or bp):
        return out, metrics
    # The last step with gradient serves BP, and DM unless DM replays the whole rollout with gradient.
    x_final = steps.final_step(backbone, cond, traj.states[-1], float(sigmas[-2])) \
        if bp or cfg.dm_backprop != "full" else None
    if cfg.dm:
        x_dm = steps.replay_with_grad(backbone, cond, traj, sigmas, cfg.eta) if cfg.dm_backprop == "full" else x_final
        if cfg.dm_loss == "dmd":
            loss, m = steps.generator_dmd_loss(backbone, cond, x_dm, 0.0, draw, eta=cfg.eta, sigma_range=cfg.dm_sigma_range)
        else:
            loss, m = steps.score_dm_loss(backbone, cond, x_dm, draw, cfg.dm_sigma_range or (0.02, 0.98))
        out["dm"] = cfg.dm_weight * loss
        metrics.update(m)
    if bp:
        images = backbone.decode(x_final)
        r = sum(e.weight * e.bp_scale * e.reward(images, texts, meta) for e in differentiable)
        loss = reward_bp.reward_bp_loss_paper(r, cfg.bp_margin) if cfg.bp_loss == "hinge" else reward_bp.reward_bp_loss_exact(r, beta)
        out["bp"] = cfg.bp_weight * loss
    return out, metrics
