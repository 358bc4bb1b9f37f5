"""Stage 2, RTDMD (spec section 5): distribution matching to the teacher plus reward RL, from a stage-1 run.

One iteration is one optimiser step (5.9): rollouts of every sampling round (no grad) -> rewards -> fake-score
update -> advantages over the whole step -> per round and micro-batch: the SubGRPO policy loss on the trained
steps plus the final-step loss (DM + reward back-propagation) -> one optimiser step -> EMA. Which terms exist
and how they are weighted was decided once, in :func:`rtdmd.train.objectives.stage2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rtdmd.backbones.base import Velocity
from rtdmd.config import Config
from rtdmd.functional import grpo
from rtdmd.functional.samplers import Trajectory, rollout
from rtdmd.rng import Draw, Streams
from rtdmd.train import objectives, preflight
from rtdmd.train.parallel import load_into
from rtdmd.train.rundir import check_stage1, load_stage1
from rtdmd.train.session import Evaluate, Session, every
from rtdmd.train.signals import stop_on_signals

STAGE = "align"


@dataclass
class Round:
    """One sampling round of this rank: its samples' prompts, draws, rollout and rewards."""

    cond: dict[str, Tensor]
    texts: list[str]
    metadata: list[dict]
    draw: Draw
    traj: Trajectory
    scores: dict[str, Tensor]


def run(config: Config, run_dir: str | Path, from_dir: str | Path, *, resume: bool = False,
        evaluate: Evaluate | None = None, **from_options) -> dict:
    """Train stage 2 into ``run_dir`` from the stage-1 run ``from_dir`` (``from_options``: ``from_checkpoint``,
    ``allow_unfinished`` of :func:`~rtdmd.train.rundir.check_stage1`); returns the last logged metrics."""
    cfg = config.align
    stage1_config, stage1_checkpoint, origin = check_stage1(Path(from_dir), config, Path(run_dir), resume,
                                                            **from_options)
    preflight.check_align(config, stage1_config)
    stage1 = load_stage1(stage1_checkpoint)
    session = Session(config, STAGE, run_dir, resume=resume, evaluate=evaluate, info=origin)
    backbone, dist, rewards = session.backbone, session.dist, session.rewards
    prompts = session.world.prompts("align")
    sigmas = backbone.generator_sigmas(cfg.step_list)
    objective = objectives.stage2(cfg, config.beta, rewards)
    teacher, generator, fake = backbone.role("teacher"), backbone.role("generator"), backbone.role("fake")

    # Start from the stage-1 result folded into the model, with fresh trainable tensors (5).
    load_into(backbone.trainable("generator"), stage1["stage1_generator"], "stage-1 generator")
    load_into(backbone.trainable("fake"), stage1["stage1_fake"], "stage-1 fake")
    backbone.start_stage2()
    state = session.train_state(cfg, ema_every=cfg.ema_every, frozen=stage1)
    if session.fresh:
        session.evaluate(state)  # the stage-1 result: the start of every curve
    if cfg.bp and objective.bp is None and dist.is_main:
        print("rtdmd: note: no differentiable reward, so the final step gets no reward back-propagation")

    streams = Streams(config.run.seed)
    per_round = cfg.samples_per_iteration  # global samples of a round; sample j of round r is r * per_round + j
    rows = list(dist.shard(per_round))
    micro = cfg.micro_batch or len(rows)

    def sample_round(it: int, r: int, trained: list[int]) -> Round:
        """Round ``r``'s rollouts and rewards: ``prompts_per_iteration`` prompts, ``group_size`` samples each."""
        order = torch.randperm(len(prompts), generator=streams.generator("groups", it)).tolist()
        index = [r * per_round + j for j in rows]
        prompt_of = [order[(j // cfg.group_size) % len(order)] for j in index]
        texts, meta = [prompts.texts[p] for p in prompt_of], [prompts.metadata[p] for p in prompt_of]
        cond = backbone.encode(texts)  # rows of the session's one encode
        draw = Draw(streams, it, index, tuple(backbone.sample_shape), session.device)
        traj = group_rollout(generator, cond, draw, cfg.group_size, sigmas, cfg.eta, trained)
        return Round(cond, texts, meta, draw, traj, rewards.score(backbone.decode(traj.final), texts, meta))

    def update(it: int, rounds: list[Round], scores: dict[str, Tensor], trained: list[int]) -> dict:
        """The fake score, then the generator: one optimiser step each over every round."""
        metrics = {}
        # Fake-score update on the final samples at s = 0 (5.7).
        for u in range(cfg.fake_update_ratio):
            for rnd in rounds:
                loss, m = objective.fake(fake, rnd.cond, rnd.traj.final, 0.0, rnd.draw.fork(u))
                state.fake.accumulate(loss.mean() / len(rounds))
                metrics.update(m)
            metrics.update(state.fake.step())
        # Advantages over the whole step's global batch (5.4).
        advantages = objective.advantages(scores, rewards.weights, cfg.group_size)
        metrics["advantage_abs"] = advantages.abs().mean().item()
        # Generator: per round and micro-batch, policy loss + final-step loss (5.5-5.6); one optimiser step (5.8).
        total, sums = len(rounds) * len(rows), {}
        for r, rnd in enumerate(rounds):
            adv = advantages[torch.as_tensor([r * per_round + j for j in rows])].to(session.device)
            for begin in range(0, len(rows), micro):
                part = slice(begin, begin + micro)
                terms, m = generator_terms(objective, generator, teacher, fake, backbone.decode, sigmas, cfg.eta,
                                           trained, {k: v[part] for k, v in rnd.cond.items()}, rnd.traj.rows(part),
                                           adv[part], rnd.texts[part], rnd.metadata[part], rnd.draw.rows(part))
                if not state.generator.accumulate(sum(terms.values()).sum() / total):
                    break
                share = len(range(*part.indices(len(rows)))) / total
                for name, value in [*((f"loss/{k}", v.sum().item() / total) for k, v in terms.items()),
                                    *((k, v * share) for k, v in m.items())]:
                    sums[name] = sums.get(name, 0.0) + value
        step_metrics = state.generator.step()
        return {**metrics, **step_metrics, **(sums if step_metrics else {})}

    with stop_on_signals() as stop:
        for it in session.progress(state, cfg.iterations, "stage 2 (RTDMD)", ("reward", "reward/total")):
            trained = grpo.choose_step_subset(len(sigmas) - 2, cfg.subset_size, streams.generator("subset", it))
            rounds = [sample_round(it, r, trained) for r in range(cfg.sampling_rounds)]
            scores = {name: torch.cat([dist.all_gather(rnd.scores[name]) for rnd in rounds])
                      for name in rounds[0].scores}
            metrics: dict = {f"reward/{n}": s.mean().item() for n, s in scores.items()}
            metrics.update({"reward/total": rewards.total(scores).mean().item(),
                            "trained_steps": "".join(map(str, trained))})
            if state.guard.record("reward", state.guard.finite(torch.stack(list(scores.values())).sum(0))):
                metrics.update(update(it, rounds, scores, trained))

            # Log, evaluate, checkpoint.
            state.step = step = it + 1
            stopping = stop.agreed(dist)
            last = step == cfg.iterations or stopping
            if every(step, cfg.log_every) or last:
                session.log(step, metrics, state)
            if every(step, config.run.eval_every) and step != cfg.iterations:
                session.evaluate(state)
            if every(step, cfg.checkpoint_every) or last:
                session.save(state)
            if stopping:
                break
            session.check_finite(state)
    return session.finish(state, stop)


def group_rollout(generator: Velocity, cond, draw: Draw, group_size: int, sigmas: Tensor, eta: float,
                  trained: list[int]) -> Trajectory:
    """The recorded rollout of 5.1 for the samples ``draw.indices`` (global sample ``j`` is in group
    ``j // group_size``): fresh per-sample noise on the trained steps, one noise per group on the others (common
    random numbers, 5.3), so that within-group reward differences come from the trained steps."""
    groups = [j // group_size for j in draw.indices]

    def noise(i: int) -> Tensor:
        if i in trained:
            return draw.randn("step_noise", i)
        return draw.streams.randn(("shared_noise", i, draw.step), groups, draw.shape, device=draw.device)

    traj = Trajectory()
    with torch.no_grad():
        rollout(generator, draw.randn("x_init"), sigmas, eta, noise, cond, record=traj)
    return traj


def generator_terms(objective: objectives.Stage2Objective, generator, teacher, fake, decode, sigmas: Tensor,
                    eta: float, trained: list[int], cond, traj: Trajectory, advantages: Tensor, texts, metadata,
                    draw: Draw) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The weighted per-sample terms of the stage-2 generator loss on one micro-batch, and their metrics."""
    terms, metrics = {}, {}
    if objective.policy is not None:
        loss, m = objective.policy(generator, cond, traj, sigmas, eta, trained, advantages)
        terms["policy"] = objective.policy_weight * loss
        metrics.update(m)
    if objective.dm is None and objective.bp is None:
        return terms, metrics
    # The last step with gradient (s_3 held fixed, 5.6) serves BP, and DM unless DM replays the whole rollout.
    last_step = lambda: rollout(generator, traj.states[-2].detach(), sigmas[-2:], eta, None, cond)  # noqa: E731
    x_final = last_step() if objective.bp is not None or not objective.dm_replay else None
    if objective.dm is not None:
        x_dm = rollout(generator, traj.states[0].detach(), sigmas, eta, lambda i: traj.noises[i], cond) \
            if objective.dm_replay else x_final
        loss, m = objective.dm(teacher, fake, cond, x_dm, 0.0, draw)
        terms["dm"] = objective.final_step_weight * objective.dm_weight * loss
        metrics.update(m)
    if objective.bp is not None:
        bp = objective.bp(decode(x_final), texts, metadata)
        terms["bp"] = objective.final_step_weight * objective.bp_weight * bp
    return terms, metrics
