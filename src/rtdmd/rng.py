"""Counter-based randomness: every random draw is a pure function of ``(seed, key...)``.

A training loop never carries RNG state: the noise of sample ``i`` at iteration ``step`` for purpose
``"renoise"`` is ``Streams(seed).randn(("renoise", step), [i], shape)``, whichever rank draws it and however
many ranks there are. That makes resume exact without saving generator states, and a run on N processes
draw the same numbers as on one. Draws happen on CPU generators and are then moved to the target device (as
diffusers' ``randn_tensor`` does), so noise is also device-independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def key_seed(*key: object) -> int:
    """A stable 63-bit seed from any tuple of ints and strings (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Streams:
    """Named random streams derived from one base seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generator(self, *key: object) -> torch.Generator:
        """A fresh CPU generator for ``key``; the same key always yields the same numbers."""
        return torch.Generator().manual_seed(key_seed(self.seed, *key))

    def randn(self, key: tuple, indices: Sequence[int], shape: Sequence[int], *,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal ``(len(indices), *shape)``; row ``j`` depends only on ``(key, indices[j])``."""
        rows = [torch.randn(tuple(shape), generator=self.generator(*key, int(i))) for i in indices]
        return torch.stack(rows).to(device=device, dtype=dtype)

    def rand(self, key: tuple, indices: Sequence[int], *, device: torch.device | str | None = None) -> Tensor:
        """Uniform ``[0, 1)`` of shape ``(len(indices),)``, one number per index."""
        values = [torch.rand((), generator=self.generator(*key, int(i))) for i in indices]
        return torch.stack(values).to(device=device)

    def randint(self, key: tuple, high: int, low: int = 0) -> int:
        """One shared integer in ``[low, high)`` (e.g. the random stop, identical on every rank)."""
        return int(torch.randint(low, high, (), generator=self.generator(*key)))
