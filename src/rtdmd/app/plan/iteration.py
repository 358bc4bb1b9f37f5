"""One training iteration of each stage, as :func:`rtdmd.train.distill.run` and :func:`rtdmd.train.align.run`
execute it, without their run directory, logging, checkpoints or random prompt choice: the same objectives
(:func:`rtdmd.train.objectives.stage1` / ``stage2``), the same rollout, ``align.group_rollout`` and
``align.generator_terms``, the same :class:`~rtdmd.train.state.TrainedRole` updates, in the same order.
``tests/app/test_plan.py`` checks that both make the same model calls. The planner runs it on fake tensors; the
GPU benchmark runs it for real.

Stage 1 is an iteration that updates the generator too, with the random stop ``k`` given (the planner takes
``k = 1``: its peak is every ``k``'s, one step having gradient and the others leaving only their result, and its
rollouts are the cheapest to simulate; FLOPs of other stops are added from the cost of one rollout step).
Stage 2 samples ``rounds`` rounds (the caller extrapolates to ``align.sampling_rounds``) with the first
``subset_size`` steps trained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rtdmd.config import AlignConfig, Config, DistillConfig
from rtdmd.functional.samplers import rollout
from rtdmd.rng import Draw, Streams
from rtdmd.train import align
from rtdmd.train.monitor import NonFiniteGuard
from rtdmd.train.parallel import Dist
from rtdmd.train.state import TrainedRole, TrainState

Phase = Callable[[str], contextlib.AbstractContextManager]


def train_state(backbone, config: Config, stage: str) -> TrainState:
    """Both trained roles of ``stage`` as the session builds them (one process), with their optimizer state
    already there, as it is from the second iteration on (a step on zero gradients creates it)."""
    cfg, dist = getattr(config, stage), Dist()
    guard = NonFiniteGuard(dist, config.run.nonfinite_patience)
    ema_every = cfg.ema_every if stage == "align" else 1
    state = TrainState(
        TrainedRole("generator", backbone.trainable("generator"), cfg.generator, dist, guard,
                    ema_decay=cfg.ema_decay, ema_every=ema_every),
        TrainedRole("fake", backbone.trainable("fake"), cfg.fake, dist, guard), guard)
    for role in (state.generator, state.fake):
        for p in role.params.values():
            p.grad = torch.zeros_like(p)
        role.optimizer.step()
        role.optimizer.zero_grad(set_to_none=True)
    return state


def no_phase(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def distill_iteration(backbone, state: TrainState, objective, cfg: DistillConfig, texts: Sequence[str],
                      sigmas: Tensor, device, *, it: int = 0, stop: int | None = None,
                      phase: Phase = no_phase) -> None:
    """Stage 1 on the samples of ``texts`` (one per sample): the fake-score update, then the generator update."""
    stop = len(sigmas) - 1 if stop is None else stop  # k, the random stop of both rollouts
    streams, rows = Streams(0), list(range(len(texts)))
    teacher, generator, fake = backbone.role("teacher"), backbone.role("generator"), backbone.role("fake")

    def batch(purpose: str):
        draw = Draw(streams, it, rows, tuple(backbone.sample_shape), device)
        return draw, draw.randn("x_init", purpose), lambda i: draw.randn("step_noise", purpose, i)

    with phase("fake-score update"):
        cond = backbone.encode(texts)
        draw, x, noise = batch("fake")
        with torch.no_grad():
            x_s = rollout(generator, x, sigmas, cfg.eta, noise, cond, stop=stop)
        loss, _ = objective.fake(fake, cond, x_s, float(sigmas[stop]), draw)
        state.fake.update(loss.mean())
        del cond, draw, x, x_s, loss
    with phase("generator update"):
        cond = backbone.encode(texts)
        draw, x, noise = batch("generator")
        x_s = rollout(generator, x, sigmas, cfg.eta, noise, cond, stop=stop, grad_from=stop - 1)
        loss, _ = objective.generator(teacher, fake, cond, x_s, float(sigmas[stop]), draw)
        state.generator.update(loss.mean())


def align_iteration(backbone, rewards, state: TrainState, objective, cfg: AlignConfig, texts: Sequence[str],
                    metadata: Sequence[dict], sigmas: Tensor, device, *, rounds: int = 1, it: int = 0,
                    phase: Phase = no_phase, hold: list | None = None) -> None:
    """Stage 2 on the samples of ``texts`` (one per sample and round: rank 0's share of a round): rollouts and
    rewards of every round, the fake-score update, advantages, the generator's micro-batches, one step each.
    The other ranks' scores, which the loop gathers for the advantages, are stood in for by copies of this rank's.
    ``hold`` (a list) receives the rounds, so that a caller can measure what one round keeps."""
    streams, rows = Streams(0), list(range(len(texts)))
    teacher, generator, fake = backbone.role("teacher"), backbone.role("generator"), backbone.role("fake")
    trained = list(range(cfg.subset_size))
    micro = cfg.micro_batch or len(rows)
    texts, metadata = list(texts), list(metadata)

    def sample_round(r: int) -> align.Round:
        cond = backbone.encode(texts)
        draw = Draw(streams, it, [r * cfg.samples_per_iteration + j for j in rows], tuple(backbone.sample_shape), device)
        traj = align.group_rollout(generator, cond, draw, cfg.group_size, sigmas, cfg.eta, trained)
        return align.Round(cond, texts, metadata, draw, traj, rewards.score(backbone.decode(traj.final), texts,
                                                                             metadata))

    with phase("rollouts and rewards"):
        sampled = [sample_round(r) for r in range(rounds)]
        if hold is not None:
            hold.extend(sampled)
        ranks = cfg.samples_per_iteration // len(rows)
        scores = {name: torch.cat([rnd.scores[name].repeat(ranks) for rnd in sampled]) for name in sampled[0].scores}
    with phase("fake-score update"):
        for u in range(cfg.fake_update_ratio):
            for rnd in sampled:
                loss, _ = objective.fake(fake, rnd.cond, rnd.traj.final, 0.0, rnd.draw.fork(u))
                state.fake.accumulate(loss.mean() / len(sampled))
            state.fake.step()
        del loss
    with phase("generator update"):
        advantages = objective.advantages(scores, rewards.weights, cfg.group_size)
        total, per_round = len(sampled) * len(rows), cfg.samples_per_iteration
        for r, rnd in enumerate(sampled):
            adv = advantages[torch.as_tensor([r * per_round + j for j in rows])].to(device)
            for begin in range(0, len(rows), micro):
                part = slice(begin, begin + micro)
                terms, _ = align.generator_terms(objective, generator, teacher, fake, backbone.decode, sigmas,
                                                 cfg.eta, trained, {k: v[part] for k, v in rnd.cond.items()},
                                                 rnd.traj.rows(part), adv[part], rnd.texts[part],
                                                 rnd.metadata[part], rnd.draw.rows(part))
                state.generator.accumulate(sum(terms.values()).sum() / total)
                del terms
        state.generator.step()
