"""One rank of the two-process scenarios of ``test_distributed.py`` (started once per session by its fixture):
both stages with ``ddp`` and with ``fsdp``, the same runs split in two by a resume, and a record of what each
rank drew and held. Usage (per rank, with torchrun's environment): ``python -m tests.train.dist_worker OUT``.

Written under OUT/<strategy>/: run directories ``s1``, ``s2`` (uninterrupted), ``s1_split``, ``s2_split``
(3 / 2 iterations, then ``--resume`` to the end), ``s1_half`` (the split run before its resume); and
``saved/<run>_step<k>_rank<r>.safetensors``: the tensors each rank passed to the checkpoint writer.
OUT/draws_rank<r>.pt: per run, the random stop and initial noise of every stage-1 rollout, and the indices,
trained steps and injected noises of every stage-2 rollout of this rank.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed
from safetensors.torch import save_file

from rtdmd.train import align, distill, state, steps
from rtdmd.train.parallel import shutdown
from tests.tiny import tiny_config

# Learning rates large enough that the runs move the weights by ~1e-3..1e-2 in a few steps (so that agreement
# to 1e-6 means something); 3 groups of 4 over 2 ranks: rank 0 holds samples 0-5 (group 0, half of group 1),
# rank 1 holds 6-11; two generator micro-batches per rank (gradient accumulation).
DISTRIBUTED = ("distill.generator.lr=1e-3", "distill.fake.lr=1e-3", "align.generator.lr=1e-3", "align.fake.lr=1e-3",
               "align.prompts_per_iteration=3", "align.group_size=4", "align.micro_batch=4")


def config(*overrides: str):
    return tiny_config(*DISTRIBUTED, *overrides)


class Recorder:
    """Wraps the rollout functions the loops call, to keep what this rank drew."""

    def __init__(self, rank: int, out: Path):
        self.rank, self.out, self.run = rank, out, ""
        self.draws: dict[str, list] = {}
        cps_rollout, group_rollout, write = steps.cps_rollout, align.group_rollout, state.write

        def record_cps(backbone, role, cond, x, sigmas, eta, noise, stop, grad_last=False):
            self.draws.setdefault(self.run, []).append({"stop": stop, "x_init": x.detach().clone()})
            return cps_rollout(backbone, role, cond, x, sigmas, eta, noise, stop, grad_last)

        def record_group(backbone, cond, draw, group_size, sigmas, eta, trained, log_prob):
            traj = group_rollout(backbone, cond, draw, group_size, sigmas, eta, trained, log_prob)
            self.draws.setdefault(self.run, []).append({
                "indices": list(draw.indices), "trained": list(trained), "x_init": traj.states[0].clone(),
                "noises": [z.clone() for z in traj.noises if z is not None]})
            return traj

        def record_write(run_dir, step, tensors, meta, is_main):
            saved = self.out / "saved"
            saved.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                      str(saved / f"{self.run.replace('/', '_')}_step{step}_rank{self.rank}.safetensors"))
            write(run_dir, step, tensors, meta, is_main)

        steps.cps_rollout, align.group_rollout, state.write = record_cps, record_group, record_write


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    recorder = Recorder(rank, out)
    for strategy in ("ddp", "fsdp"):
        root, parallel = out / strategy, f"run.parallel={strategy}"
        recorder.run = f"{strategy}/s1"
        distill.run(config(parallel), root / "s1")
        recorder.run = f"{strategy}/s2"
        align.run(config(parallel), root / "s2", root / "s1")
        recorder.run = f"{strategy}/s1_split"
        distill.run(config(parallel, "distill.iterations=3"), root / "s1_split")
        if rank == 0:
            shutil.copytree(root / "s1_split", root / "s1_half")
        torch.distributed.barrier()
        distill.run(config(parallel), root / "s1_split", resume=True)
        recorder.run = f"{strategy}/s2_split"
        align.run(config(parallel, "align.iterations=2"), root / "s2_split", root / "s1")
        align.run(config(parallel), root / "s2_split", root / "s1", resume=True)
    torch.save(recorder.draws, out / f"draws_rank{rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
