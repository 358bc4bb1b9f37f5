"""Memory and FLOPs of code run on fake tensors (:class:`torch._subclasses.fake_tensor.FakeTensorMode`).

:class:`MemoryTracker` is a dispatch mode stacked on the fake mode: every storage an operator creates is counted
from its creation until Python frees it (a weak-reference finalizer on the storage), which is when the caching
allocator of a GPU gets it back too; views and in-place results share their input's storage and count once.
Storages that existed before (weights, optimizer state: counted by the planner from the objects that hold them)
are left out. It keeps the peak of the live bytes and which storages were alive at that moment, so the peak can
be split by what holds it (gradients are tagged when autograd accumulates them; the rest is activations).

Operators on real tensors only (the schedule's levels, position ids) run for real: their values steer the code
(``float(sigmas[i])``). Operators whose output is data (``.item()``, ``torch.equal``) have no answer on fake
tensors unless the fake tensor carries its constant; otherwise the tracker answers with a neutral value (0,
True): the planned iteration takes the branches of finite losses and all-true checks, as a training step does.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten


def _scalar(args, kwargs):
    return True if args[0].dtype == torch.bool else 0


DATA_DEPENDENT = {
    aten._local_scalar_dense.default: _scalar,
    aten.equal.default: lambda args, kwargs: True,
    aten.is_nonzero.default: lambda args, kwargs: True,
}


def flop_formulas() -> dict:
    """torch's FLOP formulas by operator (matrix products, convolutions, attention), with the CPU flash-attention
    kernels counted as the CUDA ones: fake tensors on the CPU take the CPU kernel, which does the same products.
    (torch's ``FlopCounterMode`` is not used: its module hooks keep the tensors that activation checkpointing
    recomputes alive until each module's backward ends, which would distort the memory being tracked.)"""
    from torch.utils.flop_counter import (
        flop_registry,
        sdpa_backward_flop_count,
        sdpa_flop_count,
        shape_wrapper,
    )

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {**flop_registry, aten._scaled_dot_product_flash_attention_for_cpu: shape_wrapper(forward),
            aten._scaled_dot_product_flash_attention_for_cpu_backward: shape_wrapper(backward)}


class MemoryTracker(TorchDispatchMode):
    def __init__(self, known: Iterable[Tensor] = ()):
        super().__init__()
        self.formulas = flop_formulas()
        self.flops = 0
        self.known: set[int] = set()
        self.live: dict[int, tuple[int, str]] = {}  # id(storage) -> (bytes, tag), storages created while tracking
        self.by_tag: dict[str, int] = {}
        self.current = 0
        self.peak = 0
        self.peak_split: dict[str, int] = {}  # by_tag at the peak
        self.phase = ""  # the caller's label of what runs now
        self.phase_peaks: dict[str, int] = {}  # the peak of the tracked bytes while each phase ran
        for t in known:
            self._know(t.untyped_storage())

    def _know(self, storage) -> None:
        key = id(storage)
        if key not in self.known:
            self.known.add(key)
            weakref.finalize(storage, self.known.discard, key)

    def know(self, tensors: Iterable[Tensor]) -> None:
        """Count ``tensors`` as pre-existing from now on (e.g. optimizer state created by a warm-up step)."""
        for t in tensors:
            storage = t.untyped_storage()
            self._free(id(storage))
            self._know(storage)

    def tag(self, tensor: Tensor, label: str) -> None:
        """Label a storage created while tracking (gradients); untagged storages are ``"activations"``."""
        key = id(tensor.untyped_storage())
        if key in self.live:
            size, old = self.live[key]
            self._move(old, -size)
            self._move(label, size)
            self.live[key] = (size, label)
            if self.current == self.peak:  # tagged at the peak (a gradient just accumulated): the split follows
                self.peak_split = dict(self.by_tag)

    def reset_peak(self) -> None:
        self.peak, self.peak_split = self.current, dict(self.by_tag)

    def _move(self, label: str, size: int) -> None:
        self.by_tag[label] = self.by_tag.get(label, 0) + size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._subclasses.fake_tensor import (
            DataDependentOutputException,
            FakeTensor,
        )

        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        if tensors and not any(isinstance(t, FakeTensor) for t in tensors):
            # Real inputs only (the schedule's levels, position ids): a constant computation, run for real.
            with _disable_current_modes():
                return func(*args, **kwargs)
        if func in DATA_DEPENDENT:
            try:  # a fake tensor that knows its value (a small constant) answers for itself
                return func(*args, **kwargs)
            except DataDependentOutputException:
                return DATA_DEPENDENT[func](args, kwargs)
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        inputs = {id(a.untyped_storage()) for a in tensors}
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self._add(t.untyped_storage(), inputs)
        return out

    def _add(self, storage, inputs: set[int]) -> None:
        key = id(storage)
        if key in self.live or key in self.known or key in inputs:
            return
        size = storage.nbytes()
        self.live[key] = (size, "activations")
        self.current += size
        self._move("activations", size)
        weakref.finalize(storage, self._free, key)
        if self.current > self.peak:
            self.peak, self.peak_split = self.current, dict(self.by_tag)
        if self.current > self.phase_peaks.get(self.phase, 0):
            self.phase_peaks[self.phase] = self.current

    def _free(self, key: int) -> None:
        if key in self.live:
            size, label = self.live.pop(key)
            self.current -= size
            self._move(label, -size)
