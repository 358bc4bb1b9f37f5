"""Memory: bytes of parameters and buffers held during training, against one copy of the base model.

"Held during training" counts what lives as long as the run: the denoiser's weights (frozen base and every adapter),
the trained tensors' AdamW moments, the EMA, the gradients at their peak (one trained role at a time: each step
frees them), and in stage 2 the stage-1 result kept for the checkpoints. Activations are not counted (they scale
with batch and resolution, not with the layout), nor text encoders and VAE (the same in every layout; listed
separately), nor cached prompt embeddings (listed per prompt).

Two parts: the formula evaluated on the published architectures (built on the meta device, exact parameter counts),
and a measurement of the objects a real (short) training run holds, for the benchmark backbones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from benchmarks.counting import patcher
from rtdmd.backbones.base import TRAINED_ROLES

# -- the formula -------------------------------------------------------------------------------------------

FP32 = 4


def formula(p_base: int, p_lora: int, stage: int, *, base_bytes: int = 2, bases: int = 1,
            stage1_copies: bool = True) -> dict[str, float]:
    """Bytes held in ``stage`` (1 or 2) with LoRA roles: ``bases`` frozen transformers of ``p_base`` parameters
    in ``base_bytes`` per value (2: bf16), and per trained role ``p_lora`` adapter parameters in float32 with a
    gradient (peak: one role at a time), two AdamW moments, an EMA (generator only); stage 2 also holds the frozen
    stage-1 adapters of both roles, and (``stage1_copies``) their copies for the checkpoint."""
    roles = len(TRAINED_ROLES)
    out = {
        "base": bases * base_bytes * p_base,
        "adapters": roles * FP32 * p_lora * (2 if stage == 2 else 1),
        "grads": FP32 * p_lora,
        "adamw": roles * 2 * FP32 * p_lora,
        "ema": FP32 * p_lora,
        "stage1_copies": roles * FP32 * p_lora if stage == 2 and stage1_copies else 0,
    }
    out["total"] = sum(out.values())
    out["ratio"] = out["total"] / (base_bytes * p_base)
    return out


def authors_layout(p_base: int, p_lora: int, base_bytes: int = 2) -> dict[str, float]:
    """The public code's layout (spec 9.1, 9.3): four full transformers (generator, fake score, teacher, EMA),
    LoRA on generator and fake with bf16 weights, gradients and Adam moments."""
    total = 4 * base_bytes * p_base + 2 * 2 * p_lora * 4  # two roles x (weight, grad, 2 moments) in bf16
    return {"total": total, "ratio": total / (base_bytes * p_base)}


# -- measured on a training run ----------------------------------------------------------------------------

def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared or viewed tensors count once; meta: 0)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def find_modules(obj, depth: int = 3) -> list[nn.Module]:
    """Top-level ``nn.Module`` objects reachable from ``obj``'s attributes (dicts, lists and diffusers pipelines
    followed ``depth`` levels deep)."""
    found: dict[int, nn.Module] = {}

    def walk(value, level: int) -> None:
        if isinstance(value, nn.Module):
            found[id(value)] = value
        elif level > 0:
            if isinstance(value, dict):
                items = value.values()
            elif isinstance(value, (list, tuple)):
                items = value
            elif hasattr(value, "__dict__") and not isinstance(value, (type, torch.Tensor)):
                items = vars(value).values()
            else:
                return
            for item in items:
                walk(item, level - 1)

    walk(obj, depth)
    modules = list(found.values())
    inner = {id(m) for top in modules for m in top.modules() if m is not top}
    return [m for m in modules if id(m) not in inner]


@dataclass
class Held:
    """Bytes one stage of a real run holds (see the module docstring)."""

    base: int  # one copy of the base: frozen non-adapter weights of the denoiser (or one trained net)
    weights: int  # every parameter and buffer of the denoiser modules (base(s) + adapters, or trained nets)
    adamw: int
    ema: int
    grads: int  # peak: the larger trained role
    stage1_copies: int
    auxiliary: int  # text encoders, VAE and other modules of the backbone
    extra: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.weights + self.adamw + self.ema + self.grads + self.stage1_copies

    @property
    def ratio(self) -> float:
        return self.total / self.base


def held(backbone, optimizers, emas, stage1) -> Held:
    trainable = {role: backbone.trainable(role) for role in TRAINED_ROLES}
    trained_ids = {id(p) for params in trainable.values() for p in params.values()}
    modules = find_modules(backbone)
    denoisers = [m for m in modules if any(id(p) in trained_ids for p in m.parameters())]
    auxiliary = [m for m in modules if m not in denoisers]
    tensors = lambda ms: [t for m in ms for t in (*m.parameters(), *m.buffers())]
    frozen = [t for m in denoisers for name, t in (*m.named_parameters(), *m.named_buffers())
              if id(t) not in trained_ids and ".lora_" not in name]
    base = storage_bytes(frozen)
    if not any(isinstance(t, nn.Parameter) for t in frozen):  # fully trained nets (the analytic world)
        generator_ids = {id(p) for p in trainable["generator"].values()}
        base = storage_bytes(tensors([m for m in denoisers if any(id(p) in generator_ids for p in m.parameters())]))
    state = [v for opt in optimizers for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return Held(base=base, weights=storage_bytes(tensors(denoisers)), adamw=storage_bytes(state),
                ema=storage_bytes(t for e in emas for t in e.shadow.values()),
                grads=max(sum(p.numel() * FP32 for p in params.values()) for params in trainable.values()),
                stage1_copies=storage_bytes(t for d in stage1 for role in d.values() for t in role.values()),
                auxiliary=storage_bytes(tensors(auxiliary)))


def measure_run(config, root: Path) -> dict[str, Held]:
    """Train stage 1 for ``config.distill.iterations`` and stage 2 for ``config.align.iterations``, capturing
    the objects each loop builds (backbone, optimisers, EMA, stage-1 tensors), then count what they hold."""
    from rtdmd.train import align, distill, loop  # noqa: F401  (loaded, so that their names get patched)
    from rtdmd.train.components import build_components
    from rtdmd.train.ema import EMA
    from rtdmd.train.optim import build_optimizer

    captured: dict = {"stage1": []}

    def components(config, device):
        captured["components"] = parts = build_components(config, device)
        captured.update(optimizers=[], emas=[])
        return parts

    def optimizer(params, cfg):
        captured["optimizers"].append(opt := build_optimizer(params, cfg))
        return opt

    class CapturedEMA(EMA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["emas"].append(self)

    def stage1(*args, **kwargs):
        captured["stage1"].append(out := align_load_stage1(*args, **kwargs))
        return out

    align_load_stage1 = align.load_stage1
    patch = patcher()
    patch.everywhere(build_components, components)
    patch.everywhere(build_optimizer, optimizer)
    patch.everywhere(EMA, CapturedEMA)
    patch.everywhere(align.load_stage1, stage1)
    out = {}
    try:
        distill.run(config, root / "s1")
        out["stage 1"] = held(captured["components"].backbone, captured["optimizers"], captured["emas"], [])
        align.run(config, root / "s2", root / "s1")
        out["stage 2"] = held(captured["components"].backbone, captured["optimizers"], captured["emas"],
                              captured["stage1"])
    finally:
        patch.undo()
    return out
