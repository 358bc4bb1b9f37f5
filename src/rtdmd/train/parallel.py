"""Process-group plumbing, kept outside models and losses. One process needs no process group at all.

Gradients of the trained roles are averaged with one explicit all-reduce after each backward (the
arithmetic of DDP without its module wrapper, which does not fit roles that share one frozen base and switch
adapters between forward passes). Launch with ``torchrun``; the backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor


class Dist:
    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, global_size: int) -> range:
        """This rank's contiguous slice of ``range(global_size)`` (``global_size % world_size == 0``)."""
        per_rank = global_size // self.world_size
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)

    def all_reduce_mean_(self, tensors: Iterable[Tensor]) -> None:
        if not self.active:
            return
        tensors = [t for t in tensors if t is not None]
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def sync_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks (missing gradients count as zero)."""
        if not self.active:
            return
        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.all_reduce_mean_(p.grad for p in params)

    def all_gather(self, tensor: Tensor) -> Tensor:
        """Concatenate equally shaped per-rank tensors along dim 0, in rank order."""
        if not self.active:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        if self.active:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group that ``torchrun`` describes (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend)
    return Dist(rank, world_size, local_rank), dev


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
