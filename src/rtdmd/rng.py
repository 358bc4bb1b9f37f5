"""Counter-based randomness: every random draw is a pure function of ``(seed, key..., sample index)``.

A training loop never carries RNG state: the noise of sample ``i`` at iteration ``step`` for purpose
``"renoise"`` is ``Streams(seed).randn(("renoise", step), [i], shape)``, whichever rank draws it and however
many ranks there are. That makes resume exact without saving generator states, and a run on N processes draw
the same numbers as on one.

The bits come from a vectorised integer hash (Wellons' "lowbias32", two rounds keyed per sample) evaluated on
the target device, so drawing noise costs a few integer operations per element and never a host round trip;
normals use the Box-Muller transform on 24-bit uniforms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF


def key_seed(*key: object) -> int:
    """A stable 63-bit seed from any tuple of ints and strings (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def hash32(x: Tensor) -> Tensor:
    """Wellons' lowbias32 on uint32 values held in int64 (products masked back to 32 bits)."""
    return hash32_(x.clone())


def hash32_(x: Tensor) -> Tensor:
    """:func:`hash32` overwriting ``x``: a large draw is bound by memory traffic, and updating one tensor in place
    instead of allocating one per step makes it several times faster (same bits)."""
    x ^= x >> 16
    x.mul_(0x7FEB352D).bitwise_and_(MASK32)
    x ^= x >> 15
    x.mul_(0x846CA68B).bitwise_and_(MASK32)
    x ^= x >> 16
    return x


class Streams:
    """Named random streams derived from one base seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generator(self, *key: object) -> torch.Generator:
        """A CPU ``torch.Generator`` for ``key`` (for the few shared scalar draws: stops, subsets, orders)."""
        return torch.Generator().manual_seed(key_seed(self.seed, *key))

    def bits(self, key: tuple, indices: Sequence[int] | Tensor, count: int,
             device: torch.device | str | None = None) -> Tensor:
        """``(len(indices), count)`` uniform 32-bit integers (int64); row ``j`` depends on ``(key, indices[j])``."""
        k = key_seed(self.seed, *key)
        k0, k1 = k & MASK32, (k >> 32) & MASK32
        idx = torch.as_tensor(indices, dtype=torch.int64, device=device).reshape(-1) & MASK32
        s0 = hash32(hash32(idx ^ k0) ^ k1)  # two independent per-sample keys
        s1 = hash32(s0 ^ k0 ^ 0x5BD1E995)
        x = torch.arange(count, dtype=torch.int64, device=idx.device)[None, :] ^ s0[:, None]  # counters
        hash32_(x)
        x ^= s1[:, None]
        return hash32_(x)

    def rand(self, key: tuple, indices: Sequence[int] | Tensor, *, device: torch.device | str | None = None,
             count: int = 1) -> Tensor:
        """Uniform ``(0, 1)`` float32 of shape ``(len(indices),)`` (or ``(len, count)`` for ``count > 1``)."""
        u = (self.bits(key, indices, count, device) >> 8).float().add_(0.5).div_(float(1 << 24))
        return u[:, 0] if count == 1 else u

    def randn(self, key: tuple, indices: Sequence[int] | Tensor, shape: Sequence[int], *,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal ``(len(indices), *shape)``; row ``j`` depends only on ``(key, indices[j])``."""
        numel = math.prod(shape)
        u = self.rand(key, indices, device=device, count=2 * numel)
        radius = u[:, 0::2].double().log_().mul_(-2.0).sqrt_()  # sqrt(-2 log u1)
        angle = u[:, 1::2].double().mul_(2 * math.pi).cos_()  # cos(2 pi u2)
        return radius.mul_(angle).reshape(-1, *shape).to(dtype)

    def randint(self, key: tuple, high: int, low: int = 0) -> int:
        """One shared integer in ``[low, high)`` (e.g. the random stop, identical on every rank)."""
        return int(torch.randint(low, high, (), generator=self.generator(*key)))


@dataclass
class Draw:
    """The per-sample random numbers of one training iteration: row ``j`` is keyed by the global sample index
    ``indices[j]``, so every draw is independent of the rank that makes it and of the number of ranks."""

    streams: Streams
    step: object
    indices: Sequence[int]
    shape: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype = torch.float32

    def randn(self, *name: object) -> Tensor:
        return self.streams.randn((*name, self.step), self.indices, self.shape, device=self.device, dtype=self.dtype)

    def rand(self, *name: object) -> Tensor:
        return self.streams.rand((*name, self.step), self.indices, device=self.device)

    def fork(self, tag: object) -> Draw:
        """Independent draws for a repeated use within one iteration (e.g. the r-th fake update)."""
        return dataclasses.replace(self, step=(self.step, tag))

    def rows(self, index: slice) -> Draw:
        """The same draws for the samples ``index`` only."""
        return dataclasses.replace(self, indices=list(self.indices)[index])
