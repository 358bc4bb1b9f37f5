"""One rank of the two-process scenarios of ``test_distributed.py`` (started once per session by its fixture):
both stages with ``ddp`` and with ``fsdp``, the same runs split in two by a resume, and a record of what each
rank drew and held. Usage (per rank, with torchrun's environment): ``python -m tests.train.dist_worker OUT``.

Every run evaluates its EMA generator every 2 iterations (with FSDP that loads EMA weights into the shards in
the middle of training). Written under OUT/<strategy>/: run directories ``s1``, ``s2`` (uninterrupted),
``s1_split``, ``s2_split`` (3 / 2 iterations, then ``--resume`` to the end), ``s1_half`` (the split run before
its resume), ``s1_nan`` (stage 1 whose second generator loss is NaN), ``s1_term`` (stage 1 where rank 1 alone
receives SIGTERM during iteration 3; ``stopped_rank<r>.json`` holds what run() returned on each rank),
``sd3_s1``, ``sd3_s2`` (both stages of a tiny SD3 pipeline with LoRA roles, built in OUT/sd3_folder; ``fsdp``
shards its transformer per block); and
``saved/<run>_step<k>_rank<r>.safetensors``: the tensors each rank passed to the checkpoint writer.
OUT/draws_rank<r>.pt: per run, the random stop and initial noise of every stage-1 rollout, and the indices,
trained steps and injected noises of every stage-2 rollout of this rank.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed
from safetensors.torch import save_file

from rtdmd.config import resolve
from rtdmd.functional.samplers import rollout
from rtdmd.train import align, distill, objectives
from rtdmd.train.parallel import shutdown
from rtdmd.train.state import TrainState
from tests.tiny import tiny_config

# Learning rates large enough that the runs move the weights by ~1e-3..1e-2 in a few steps (so that agreement
# to 1e-6 means something); 3 groups of 4 over 2 ranks: rank 0 holds samples 0-5 (group 0, half of group 1),
# rank 1 holds 6-11; two generator micro-batches per rank (gradient accumulation).
DISTRIBUTED = ("distill.generator.lr=1e-3", "distill.fake.lr=1e-3", "align.generator.lr=1e-3", "align.fake.lr=1e-3",
               "align.prompts_per_iteration=3", "align.group_size=4", "align.micro_batch=4", "run.eval_every=2")


def config(*overrides: str):
    return tiny_config(*DISTRIBUTED, *overrides)


def evaluator(cfg):
    """The world's metrics of the EMA generator, as ``rtdmd distill`` / ``align`` compute them."""
    from rtdmd.app.world_metrics import evaluate_role

    return lambda parts, step: evaluate_role(parts, cfg)["summary"]


def train(stage, *overrides, resume=False, **dirs):
    cfg = config(*overrides)
    if stage == "s1":
        return distill.run(cfg, dirs["out"], resume=resume, evaluate=evaluator(cfg))
    return align.run(cfg, dirs["out"], dirs["start"], resume=resume, evaluate=evaluator(cfg))


@contextmanager
def nan_generator_loss(calls):
    """The stage-1 generator loss is NaN on the given (1-based) calls."""
    original, count = objectives.DMDLoss.__call__, [0]

    def loss(*args, **kwargs):
        count[0] += 1
        value, metrics = original(*args, **kwargs)
        return (value * float("nan") if count[0] in calls else value), metrics

    objectives.DMDLoss.__call__ = loss
    try:
        yield
    finally:
        objectives.DMDLoss.__call__ = original


class Recorder:
    """Wraps what the loops call, to keep what this rank drew: the stage-1 rollouts (random stop, initial noise),
    the stage-2 sampling rollouts (indices, trained steps, initial and injected noise), and the tensors every
    rank hands to a checkpoint."""

    def __init__(self, rank: int, out: Path):
        self.rank, self.out, self.run, self.sigterm_at = rank, out, "", None
        self.draws: dict[str, list] = {}
        group_rollout, state_dict = align.group_rollout, TrainState.state_dict

        def record_stage1(velocity, x, sigmas, eta, noise=None, cond=None, *, stop=None, **kwargs):
            self.draws.setdefault(self.run, []).append({"stop": stop, "x_init": x.detach().clone()})
            if self.sigterm_at == len(self.draws[self.run]):
                os.kill(os.getpid(), signal.SIGTERM)  # preemption reaching this rank only
            return rollout(velocity, x, sigmas, eta, noise, cond, stop=stop, **kwargs)

        def record_group(generator, cond, draw, group_size, sigmas, eta, trained):
            traj = group_rollout(generator, cond, draw, group_size, sigmas, eta, trained)
            self.draws.setdefault(self.run, []).append({
                "indices": list(draw.indices), "trained": list(trained), "x_init": traj.states[0].clone(),
                "noises": [z.clone() for z in traj.noises if z is not None]})
            return traj

        def record_state(state):
            tensors, info = state_dict(state)
            saved = self.out / "saved"
            saved.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                      str(saved / f"{self.run.replace('/', '_')}_step{state.step}_rank{self.rank}.safetensors"))
            return tensors, info

        distill.rollout, align.group_rollout, TrainState.state_dict = record_stage1, record_group, record_state


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    recorder = Recorder(rank, out)
    for strategy in ("ddp", "fsdp"):
        root, parallel = out / strategy, f"run.parallel={strategy}"
        recorder.run = f"{strategy}/s1"
        train("s1", parallel, out=root / "s1")
        recorder.run = f"{strategy}/s2"
        train("s2", parallel, out=root / "s2", start=root / "s1")
        recorder.run = f"{strategy}/s1_split"
        train("s1", parallel, "distill.iterations=3", out=root / "s1_split")
        if rank == 0:
            shutil.copytree(root / "s1_split", root / "s1_half")
        torch.distributed.barrier()
        train("s1", parallel, out=root / "s1_split", resume=True)
        recorder.run = f"{strategy}/s2_split"
        train("s2", parallel, "align.iterations=2", out=root / "s2_split", start=root / "s1")
        train("s2", parallel, out=root / "s2_split", start=root / "s1", resume=True)
        recorder.run = f"{strategy}/s1_nan"
        with nan_generator_loss({2}):
            train("s1", parallel, out=root / "s1_nan")
        recorder.run = f"{strategy}/s1_term"
        recorder.sigterm_at = 4 if rank == 1 else None  # the 4th rollout: the fake update of iteration 3
        result = train("s1", parallel, "distill.iterations=1000", out=root / "s1_term")
        recorder.sigterm_at = None
        (root / "s1_term" / f"stopped_rank{rank}.json").write_text(json.dumps(result.get("stopped_by_signal")))
    sd3_runs(out, rank, recorder)
    checkpointing_grads(out, rank)
    torch.save(recorder.draws, out / f"draws_rank{rank}.pt")
    shutdown()


def sd3_runs(out: Path, rank: int, recorder: Recorder) -> None:
    """Both stages of a tiny SD3 pipeline (LoRA roles on one transformer), ddp then fsdp."""
    from tests.backbones import tiny_pipelines
    from tests.backbones.image_reward import registered

    folder = out / "sd3_folder"
    if rank == 0:
        tiny_pipelines.sd3_pipeline(folder)
        (out / "prompts.txt").write_text("a red cube\na blue ball\na green tree\n")
    torch.distributed.barrier()
    raw = {"world": {"kind": "prompts", "train": str(out / "prompts.txt")},
           "backbone": {"kind": "sd3", "path": str(folder), "height": 16, "width": 16, "max_sequence_length": 8,
                        "teacher_guidance": 3.0},
           "reward": {"kind": "brightness"},
           "distill": {"iterations": 3, "batch_size": 4, "fake_update_ratio": 1, "checkpoint_every": 0,
                       "generator": {"lr": 1e-3}, "fake": {"lr": 1e-3}},
           "align": {"iterations": 2, "prompts_per_iteration": 1, "group_size": 4, "micro_batch": 1, "ema_every": 1,
                     "checkpoint_every": 0, "generator": {"lr": 1e-3}, "fake": {"lr": 1e-3}},
           "run": {"progress": False}}
    with registered():
        for strategy in ("ddp", "fsdp"):
            cfg = resolve(raw, [f"run.parallel={strategy}"])
            recorder.run = f"{strategy}/sd3_s1"
            distill.run(cfg, out / strategy / "sd3_s1")
            recorder.run = f"{strategy}/sd3_s2"
            align.run(cfg, out / strategy / "sd3_s2", out / strategy / "sd3_s1")


def checkpointing_grads(out: Path, rank: int) -> None:
    """Gradients of both trained roles of tiny SD3 and FLUX.1 backbones sharded with FSDP2, with and without
    activation checkpointing, in the role-switching scenario of tests/backbones/test_checkpointing.py; written to
    OUT/checkpointing/<family>_<plain|checkpointed>_rank<r>.safetensors (full tensors)."""
    from rtdmd.backbones.base import TRAINED_ROLES
    from rtdmd.train.parallel import Dist, distribute
    from tests.backbones import conftest, tiny_pipelines
    from tests.backbones.test_checkpointing import prepare, role_switching_grads

    folders = {"sd3": out / "sd3_folder", "flux1_dev": out / "flux1_folder"}
    if rank == 0:
        tiny_pipelines.flux1_pipeline(folders["flux1_dev"], guidance_embeds=True)
    torch.distributed.barrier()
    target = out / "checkpointing"
    target.mkdir(exist_ok=True)
    for family, folder in folders.items():
        for variant in ("plain", "checkpointed"):
            backbone = conftest.build(family, folder)
            prepare(backbone, stage2=True)
            distribute(backbone, TRAINED_ROLES, Dist(rank, 2, rank, "fsdp", "cpu"))
            if variant == "checkpointed":
                backbone.enable_activation_checkpointing()
            grads = role_switching_grads(backbone)
            save_file({k: v.contiguous() for k, v in grads.items()},
                      str(target / f"{family}_{variant}_rank{rank}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
