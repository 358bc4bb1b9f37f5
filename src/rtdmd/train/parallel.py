"""Process-group plumbing, kept outside models and losses. One process needs no process group at all.

Launch with ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); the backend is NCCL on CUDA and gloo on CPU, the code is the same. Two strategies
(``run.parallel``):

- ``ddp``: every rank holds the full trainable tensors; their gradients are averaged with one explicit
  all-reduce after each backward (:meth:`Dist.sync_grads`): the arithmetic of DDP without its module wrapper,
  which does not fit roles that share one frozen base and switch adapters between forward passes.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) applied from outside the model to the modules the
  backbone lists in ``fsdp_units()`` (e.g. transformer blocks, then the root). Parameters become DTensor
  shards, FSDP reduce-scatters the gradients itself (no explicit all-reduce), and the helpers below
  (:func:`full_tensor`, :func:`shard_like`) let the optimiser, EMA and checkpoint code work with either:
  checkpoints hold full tensors, so they do not depend on the number of processes.

Randomness needs nothing here: every draw is keyed by the global sample index (:mod:`rtdmd.rng`), rank ``r``
takes the contiguous slice :meth:`Dist.shard` of the global batch, so N processes draw what one process draws.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from rtdmd.devices import resolve_device, torch_dtype
from rtdmd.errors import UserError


class Dist:
    """This process's place in the job. ``device`` is where collectives of small tensors live (NCCL needs CUDA
    tensors, gloo CPU ones)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, strategy: str = "ddp",
                 device: torch.device | str = "cpu"):
        self.rank, self.world_size, self.local_rank, self.strategy = rank, world_size, local_rank, strategy
        self.device = torch.device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        """Parameters are FSDP shards (DTensors): gradients are reduced by FSDP, forwards are collectives."""
        return self.active and self.strategy == "fsdp"

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
        """Average the gradients of ``params`` over ranks (missing gradients count as zero). A no-op with
        ``fsdp``, whose backward already reduce-scattered them."""
        if not self.active or self.sharded:
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

    def mean_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Float metrics averaged over ranks (each rank's value is a mean over its equal share of the global
        batch, so this is the global mean); other values are kept as they are. A collective."""
        out = dict(metrics)
        keys = sorted(k for k, v in metrics.items() if isinstance(v, float))
        if self.active and keys:
            local = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
            values = self.all_reduce_sum(local)
            out.update({k: float(v) / self.world_size for k, v in zip(keys, values.tolist())})
        return out

    @torch.no_grad()
    def broadcast_(self, tensors: Iterable[Tensor]) -> None:
        """Copy rank 0's values into ``tensors`` on every rank (as DDP does when it wraps a model)."""
        if not self.active:
            return
        for t in tensors:
            full = t.detach().contiguous()
            dist.broadcast(full, src=0)
            if full.data_ptr() != t.data_ptr():
                t.copy_(full)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def env_world_size() -> int:
    """The number of processes the launcher started (1 without a launcher), read without joining any group."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer: launch with torchrun") from None


def init_distributed(device: str = "auto", strategy: str = "ddp") -> tuple[Dist, torch.device]:
    """Join the process group that ``torchrun`` describes (if any) and pick this rank's device."""
    world_size = env_world_size()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
        if missing:
            raise UserError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: launch several processes "
                            f"with torchrun (e.g. torchrun --nproc_per_node {world_size} -m rtdmd.cli ...)")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank, strategy, dev), dev


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# -- parameters: replicate (ddp) or shard (fsdp) -------------------------------------------------------------

def distribute(backbone, roles: Iterable[str], d: Dist) -> None:
    """Make the trained roles' tensors consistent across ranks, then shard them with ``fsdp``.

    Call it once the roles hold their starting values (after ``init_students`` / ``start_stage2``) and before
    building optimisers, EMA or loading a checkpoint: sharding replaces the parameter objects, so fetch
    ``backbone.trainable(role)`` again afterwards. Rank 0's values are broadcast first (DDP does the same when
    it wraps a model), so a random initialisation that differs between ranks cannot split them apart.
    """
    if not d.active:
        return
    roles = list(roles)
    d.broadcast_(p for role in roles for p in backbone.trainable(role).values())
    if d.sharded:
        shard_backbone(backbone, roles, d)


def shard_backbone(backbone, roles: list[str], d: Dist) -> None:
    """``fully_shard`` each module of ``backbone.fsdp_units()`` in order: the units (e.g. transformer blocks)
    first, then the root modules that hold them, so that each unit's parameters are gathered only around its
    own forward and backward."""
    units = getattr(backbone, "fsdp_units", None)
    if units is None:
        raise UserError(f"run.parallel=fsdp: backbone kind {type(backbone).__name__} does not list its FSDP units "
                        f"(fsdp_units): use run.parallel=ddp")
    mesh = init_device_mesh(backbone.device.type, (d.world_size,))
    for module in units():
        fully_shard(module, mesh=mesh)
    unsharded = [f"{role}/{name}" for role in roles for name, p in backbone.trainable(role).items()
                 if not is_sharded(p)]
    if unsharded:
        raise RuntimeError(f"fsdp_units() of {type(backbone).__name__} do not cover the trainable tensor "
                           f"{unsharded[0]}")


def configure_execution(backbone, run) -> None:
    """How the model executes (``run.activation_checkpointing``, ``run.autocast``, ``run.compile``), applied from
    outside the model as FSDP is, through the backbone's optional hooks. A backbone without the hook refuses an
    option in one line; autocast is skipped by a backbone that has no low-precision forward (the analytic
    ``mlp``)."""
    enable_autocast = getattr(backbone, "enable_autocast", None)
    if run.autocast and run.dtype != "fp32" and enable_autocast is not None:
        enable_autocast(torch_dtype(run.dtype))
    if run.activation_checkpointing:
        _hook(backbone, "enable_activation_checkpointing", "activation_checkpointing")()
    if run.compile != "off":
        _hook(backbone, "compile_blocks", "compile")(run.compile)


def _hook(backbone, name: str, option: str):
    hook = getattr(backbone, name, None)
    if hook is None:
        raise UserError(f"run.{option}: backbone {type(backbone).__name__} does not support it (no {name}): "
                        f"set run.{option} to its default")
    return hook


def reshard(backbone) -> None:
    """Free the gathered parameters of the backbone's FSDP modules (a local operation; a no-op without FSDP).

    FSDP keeps a root module's parameters gathered from its forward until the end of the next backward, and
    while they are gathered the module holds those gathered copies: ``backbone.trainable(role)`` returns them
    instead of the shards, and an in-place change of the shards outside a training step (loading the EMA
    weights) is not seen by the next forward. Call this before either."""
    units = getattr(backbone, "fsdp_units", None)
    if units is None:
        return
    for module in units():
        if isinstance(module, FSDPModule):
            module.reshard()


def is_sharded(t: Tensor) -> bool:
    return isinstance(t, DTensor)


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor behind ``t`` (a collective for an FSDP shard: call it on every rank), detached."""
    t = t.detach()
    return t.full_tensor() if is_sharded(t) else t


def shard_like(value: Tensor, like: Tensor) -> Tensor:
    """``value`` (a full tensor, the same on every rank) laid out like ``like``: this rank's shard when ``like``
    is an FSDP shard, else ``value`` on ``like``'s device and dtype."""
    value = value.to(device=like.device, dtype=like.dtype)
    if is_sharded(like):
        return distribute_tensor(value, like.device_mesh, like.placements)
    return value


@torch.no_grad()
def load_into(params: Mapping[str, torch.nn.Parameter], values: Mapping[str, Tensor], what: str) -> None:
    """Copy full tensors ``values`` into ``params`` (into this rank's shards when they are FSDP shards)."""
    missing = sorted(set(params) - set(values))
    if missing:
        raise UserError(f"checkpoint lacks {len(missing)} {what} tensors (e.g. {missing[0]}): it was written for "
                        f"another backbone configuration")
    for name, p in params.items():
        if tuple(values[name].shape) != tuple(p.shape):
            raise UserError(f"checkpoint tensor {what} {name} has shape {list(values[name].shape)}, the model's has "
                            f"{list(p.shape)}: it was written for another backbone configuration")
        p.copy_(shard_like(values[name], p))
