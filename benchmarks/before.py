"""The code paths this branch replaced, kept here (and only here) so that every benchmark run measures before and
after side by side on the same machine and load.

- ``peft_role_switch``: ``RoleAdapters.activate`` as it was: diffusers' ``enable_adapters`` / ``set_adapter`` /
  ``disable_adapters`` (each walks every module of the transformer, checks the peft version by reading package
  metadata, and toggles ``requires_grad`` on every adapter layer), then our ``requires_grad`` fix-up.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from rtdmd.backbones.common import PromptCache
from rtdmd.backbones.lora import RoleAdapters
from rtdmd.rng import MASK32, Streams, key_seed


def peft_activate(self: RoleAdapters, role: str):
    model = self.bases[role]
    wanted = tuple(self.adapters(role))
    if self._state.get(id(model)) != wanted:
        if not wanted:
            model.disable_adapters()
        else:
            model.enable_adapters()
            model.set_adapter(list(wanted))
        self._state[id(model)] = wanted
        self._fix_requires_grad()
    return model


@contextlib.contextmanager
def peft_role_switch() -> Iterator[None]:
    current = RoleAdapters.activate
    RoleAdapters.activate = peft_activate
    try:
        yield
    finally:
        RoleAdapters.activate = current


@torch.no_grad()
def walking_prompt_cache_call(self: PromptCache, prompts):
    """``PromptCache.__call__`` as it was: it listed every cached prompt at every call to find what to evict."""
    prompts = list(prompts)
    missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
    if missing:
        batch = self._encode(missing)
        for i, prompt in enumerate(missing):
            self._rows[prompt] = {k: v[i:i + 1].clone() for k, v in batch.items()}
    rows = []
    for prompt in prompts:
        self._rows.move_to_end(prompt)
        rows.append(self._rows[prompt])
    out = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    evictable = [p for p in self._rows if p not in self.pinned]
    for prompt in evictable[:max(0, len(evictable) - max(self.capacity, len(prompts)))]:
        del self._rows[prompt]
    return out


@contextlib.contextmanager
def walking_prompt_cache() -> Iterator[None]:
    current = PromptCache.__call__
    PromptCache.__call__ = walking_prompt_cache_call
    try:
        yield
    finally:
        PromptCache.__call__ = current


def _hash32(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def _bits(self, key, indices, count, device=None):
    k = key_seed(self.seed, *key)
    k0, k1 = k & MASK32, (k >> 32) & MASK32
    idx = torch.as_tensor(indices, dtype=torch.int64, device=device).reshape(-1) & MASK32
    s0 = _hash32(_hash32(idx ^ k0) ^ k1)
    s1 = _hash32(s0 ^ k0 ^ 0x5BD1E995)
    counter = torch.arange(count, dtype=torch.int64, device=idx.device)
    return _hash32(_hash32(counter[None, :] ^ s0[:, None]) ^ s1[:, None])


def _rand(self, key, indices, *, device=None, count=1):
    u = ((self.bits(key, indices, count, device) >> 8).float() + 0.5) / float(1 << 24)
    return u[:, 0] if count == 1 else u


def _randn(self, key, indices, shape, *, device=None, dtype=torch.float32):
    u = self.rand(key, indices, device=device, count=2 * math.prod(shape))
    u1, u2 = u[:, 0::2].double(), u[:, 1::2].double()
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).reshape(-1, *shape).to(dtype)


@contextlib.contextmanager
def out_of_place_rng() -> Iterator[None]:
    current = Streams.bits, Streams.rand, Streams.randn
    Streams.bits, Streams.rand, Streams.randn = _bits, _rand, _randn
    try:
        yield
    finally:
        Streams.bits, Streams.rand, Streams.randn = current


def _per_tensor_adamw(params, cfg):
    return torch.optim.AdamW(list(params.values()), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


@contextlib.contextmanager
def per_tensor_adamw() -> Iterator[None]:
    from benchmarks.counting import patcher
    from rtdmd.train import align, distill, loop  # noqa: F401  (loaded, so that their names get patched)
    from rtdmd.train.optim import build_optimizer

    patch = patcher()
    patch.everywhere(build_optimizer, _per_tensor_adamw)
    try:
        yield
    finally:
        patch.undo()


@contextlib.contextmanager
def everything() -> Iterator[None]:
    with peft_role_switch(), walking_prompt_cache(), out_of_place_rng(), per_tensor_adamw():
        yield
