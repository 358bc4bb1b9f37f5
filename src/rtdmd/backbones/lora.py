"""Roles without copies: the generator and the fake score as peft LoRA adapters on one frozen base.

- The teacher is the base with every adapter disabled.
- Stage 1 adds ``generator_1`` and ``fake_1`` (B = 0, so both start as the teacher's function).
- :meth:`RoleAdapters.start_stage2` freezes them and adds ``generator_2`` / ``fake_2`` (B = 0 again). A role then
  runs its frozen stage-1 adapter and its fresh one together: the same function as merging stage 1 into the
  base (spec section 5), without a second copy of the base.

Adapter tensors are kept in float32 whatever the base's dtype (peft casts the adapter's input and output).
Trainable tensors are named like diffusers' LoRA keys without the adapter name
(``transformer_blocks.0.attn.to_q.lora_A.weight``), the same for every stage and role.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from rtdmd.backbones.base import TRAINED_ROLES
from rtdmd.errors import UserError


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    target_modules: tuple[str, ...]  # suffixes of module names; only nn.Linear modules are adapted


def target_module_names(model: nn.Module, suffixes: Sequence[str]) -> list[str]:
    """Full names of the ``nn.Linear`` modules (or peft layers already wrapping one) whose name is, or ends with
    ``.`` + , one of ``suffixes``."""
    names = [name for name, module in model.named_modules()
             if isinstance(getattr(module, "base_layer", module), nn.Linear)
             and any(name == s or name.endswith("." + s) for s in suffixes)]
    if not names:
        raise UserError(f"backbone.target_modules {list(suffixes)} match no linear layer of "
                        f"{type(model).__name__}: use names such as to_q, to_k, to_v, to_out.0")
    return names


def add_adapter(model: nn.Module, name: str, spec: LoraSpec, seed: int) -> None:
    """Inject LoRA adapter ``name`` (A random with a fixed seed, B = 0) into a diffusers model, in float32."""
    from peft import LoraConfig

    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, init_lora_weights=True, lora_dropout=0.0,
                        target_modules=target_module_names(model, spec.target_modules))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # Several adapters on one model is the point here, not an accident peft should warn about.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        torch.manual_seed(seed)
        model.add_adapter(config, adapter_name=name)
    for param_name, param in model.named_parameters():
        if f".{name}." in param_name:
            param.data = param.data.float()


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """The peft adapter layers of ``model`` (one per adapted linear layer)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def set_active(layers: Sequence[nn.Module], adapters: Sequence[str]) -> None:
    """Run ``adapters`` on every layer of ``layers`` (none: the base alone, adapters disabled).

    This is what peft's ``set_adapter`` and ``disable_adapters`` leave on each layer (its ``active_adapters`` and
    ``disable_adapters``), without what makes them cost milliseconds per call, which the loops pay several times
    per iteration (a role switch cost about as much as a tiny model's forward): a walk over every module of the
    model, a package-version check, and toggling ``requires_grad`` (ours is fixed, see ``_fix_requires_grad``).
    """
    for layer in layers:
        layer._disable_adapters = not adapters
        if adapters:
            layer._active_adapter = list(adapters)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a diffusers transformer (joint, then single-stream)."""
    return [b for name in ("transformer_blocks", "single_transformer_blocks") for b in getattr(model, name, None) or []]


def _adapter_params(model: nn.Module, adapter: str) -> dict[str, nn.Parameter]:
    tag = f".{adapter}."
    return {n.replace(tag, "."): p for n, p in model.named_parameters() if tag in n}


class RoleAdapters:
    """The three roles on one or two frozen bases (FLUX.2 may give the generator its own base).

    ``bases`` maps each role to the transformer it runs on; ``teacher`` and ``fake`` must share one.
    """

    def __init__(self, bases: Mapping[str, nn.Module], spec: LoraSpec):
        if bases["teacher"] is not bases["fake"]:
            raise ValueError("the fake score must live on the teacher's base")
        self.bases = dict(bases)
        self.spec = spec
        self.stage = 0
        self.frozen: dict[str, list[str]] = {role: [] for role in TRAINED_ROLES}
        self.current: dict[str, str] = {}
        self._params: dict[str, dict[str, nn.Parameter]] = {}  # adapter name -> its tensors (see _tensors)
        self._probe: dict[str, str] = {}  # adapter name -> the full name of one of its tensors
        self._layers: dict[int, list[nn.Module]] = {}  # id(base) -> its LoRA layers
        self._state: dict[int, tuple[str, ...]] = {}  # id(base) -> its active adapters (empty: base only)
        self.folded: dict[int, str] = {}  # id(base) -> the role folded into it (see fold)
        self._block_layers: dict[int, list[nn.Module]] = {}  # id(block) -> its LoRA layers (checkpointing)
        self.recomputing = 0  # > 0 while a checkpointed block is recomputed in a backward pass
        self._new_stage()

    def _new_stage(self) -> None:
        self.stage += 1
        for role in TRAINED_ROLES:
            name = f"{role}_{self.stage}"
            add_adapter(self.bases[role], name, self.spec, seed=zlib.crc32(name.encode()))
            self._params[name] = _adapter_params(self.bases[role], name)
            self._probe[name] = next(n for n, _ in self.bases[role].named_parameters() if f".{name}." in n)
            self.current[role] = name
        self._layers = {id(model): lora_layers(model) for model in self.bases.values()}
        self._block_layers.clear()
        self._state.clear()
        self._fix_requires_grad()

    def _tensors(self, name: str) -> dict[str, nn.Parameter]:
        """Adapter ``name``'s tensors as its base holds them now. Cached; the cache is rebuilt when the base's
        parameter objects were replaced (FSDP's ``fully_shard`` replaces them with DTensor shards)."""
        base = self.bases[name.rsplit("_", 1)[0]]
        probe = self._probe[name]
        if base.get_parameter(probe) is not self._params[name][probe.replace(f".{name}.", ".")]:
            self._params[name] = _adapter_params(base, name)
        return self._params[name]

    def _fix_requires_grad(self) -> None:
        # peft's add_adapter / set_adapter turn requires_grad on for whatever they activate and off for the rest;
        # ours is fixed: the current adapters train (active or not), frozen ones never do.
        for role in TRAINED_ROLES:
            for name in self.frozen[role]:
                for p in self._tensors(name).values():
                    p.requires_grad_(False)
            for p in self._tensors(self.current[role]).values():
                p.requires_grad_(True)

    def adapters(self, role: str) -> list[str]:
        return [] if role == "teacher" else [*self.frozen[role], self.current[role]]

    def activate(self, role: str) -> nn.Module:
        """Set the adapters of ``role`` on its base and return that base."""
        model = self.bases[role]
        if id(model) in self.folded:
            if self.folded[id(model)] != role:
                raise RuntimeError(f"role {role!r} shares its base with {self.folded[id(model)]!r}, which was folded "
                                   "into it: a process that folds a role samples only that role")
            return model
        wanted = tuple(self.adapters(role))
        if self._state.get(id(model)) != wanted:
            set_active(self._layers[id(model)], wanted)
            self._state[id(model)] = wanted
        return model

    def enable_checkpointing(self) -> None:
        """Per-block activation checkpointing of every base (diffusers' ``enable_gradient_checkpointing``, which
        checkpoints each transformer block only when gradients are enabled: passes without gradient, the teacher's
        and the rollouts', pay nothing), with :meth:`checkpoint` as the checkpoint function."""
        for model in dict.fromkeys(self.bases.values()):
            model.enable_gradient_checkpointing(gradient_checkpointing_func=self.checkpoint)

    def compile_blocks(self, backend: str) -> None:
        """``torch.compile`` of each transformer block's forward (``run.compile``), the unit that repeats. The
        module's own call stays eager, so FSDP's hooks and the checkpointing above run around the compiled code.
        Every role (its active adapters), gradient mode and batch size is a variant compiled once; the limit on
        variants per block is raised to hold them all."""
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        for model in dict.fromkeys(self.bases.values()):
            for block in transformer_blocks(model):
                block.forward = torch.compile(block.forward, backend=backend)

    def checkpoint(self, block: nn.Module, *args):
        """``block(*args)`` keeping only its inputs; the backward pass recomputes the rest with the adapters that
        were active in the forward pass. A loss often switches roles between its forward and its backward (DMD:
        the generator's forward with gradient, then teacher and fake score without), so a recomputation with the
        adapters active at backward time would differentiate another role's function."""
        active = self._block_state(block)
        return torch.utils.checkpoint.checkpoint(
            block, *args, use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), self._recomputing(block, active)))

    def _block_state(self, block: nn.Module) -> tuple[bool, tuple[str, ...]]:
        layers = self._block_layers.get(id(block))
        if layers is None:
            layers = self._block_layers[id(block)] = lora_layers(block)
        if not layers:
            return True, ()
        active = layers[0]._active_adapter
        return layers[0]._disable_adapters, (active,) if isinstance(active, str) else tuple(active)

    @contextlib.contextmanager
    def _recomputing(self, block: nn.Module, active: tuple[bool, tuple[str, ...]]) -> Iterator[None]:
        now = self._block_state(block)
        layers = self._block_layers[id(block)]
        if now != active:
            set_active(layers, () if active[0] else active[1])
        self.recomputing += 1  # read by FLOP counters: recomputation is not model work
        try:
            yield
        finally:
            self.recomputing -= 1
            if now != active:
                set_active(layers, () if now[0] else now[1])

    def trainable(self, role: str) -> dict[str, nn.Parameter]:
        if role not in TRAINED_ROLES:
            raise ValueError(f"role {role!r} has no trainable tensors (trained roles: {TRAINED_ROLES})")
        return dict(self._tensors(self.current[role]))

    def start_stage2(self) -> None:
        for role in TRAINED_ROLES:
            self.frozen[role].append(self.current[role])
        self._new_stage()

    def combined_lora(self, role: str) -> tuple[dict[str, Tensor], int]:
        """All adapters of ``role`` as ONE LoRA in diffusers' key format, float32: per module
        ``A = cat_i A_i`` (rank ``sum r_i``) and ``B = cat_i (alpha_i / r_i) B_i``, so that ``B A`` equals the
        sum of the adapters' updates and the LoRA's own scale is 1 (alpha = rank). Returns (tensors, rank)."""
        from peft.tuners.lora import LoraLayer

        names = self.adapters(role)
        out: dict[str, Tensor] = {}
        rank = 0
        for module_name, module in self.bases[role].named_modules():
            if not isinstance(module, LoraLayer):
                continue
            a = torch.cat([module.lora_A[n].weight.detach().float() for n in names], dim=0)
            b = torch.cat([module.lora_B[n].weight.detach().float() * module.scaling[n] for n in names], dim=1)
            out[f"{module_name}.lora_A.weight"] = a.cpu()
            out[f"{module_name}.lora_B.weight"] = b.cpu()
            rank = a.shape[0]
        return out, rank

    def fold(self, role: str) -> None:
        """For a process that only samples ``role``: add its adapters' update to the base weights in place
        (``W + B A`` in float32, cast back, as the merged export) and put the plain layers back in place of peft's
        wrappers, so that a forward costs what the base's does. The other roles on that base are gone (they raise);
        an adapter update below the base dtype's resolution is rounded away, as in any merged model."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = self.bases[role]
        lora, _ = self.combined_lora(role)
        wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
        with torch.no_grad():
            for name, module in wrapped:
                layer = module.get_base_layer()
                a, b = (lora[f"{name}.lora_{x}.weight"].to(layer.weight.device) for x in "AB")
                layer.weight.copy_((layer.weight.float() + b @ a).to(layer.weight.dtype))
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, layer)
        self.folded[id(model)] = role

    def merged_state_dict(self, role: str) -> dict[str, Tensor]:
        """State dict of ``role``'s base with its adapters merged (``W + B A`` in float32, cast back), in the
        base model's own key format (no adapter wrappers)."""
        lora, _ = self.combined_lora(role)
        merged: dict[str, Tensor] = {}
        for key, value in self.bases[role].state_dict().items():
            if ".lora_" in key:
                continue
            merged[key.replace(".base_layer.", ".")] = value.detach().cpu()
        for key in [k for k in lora if k.endswith(".lora_A.weight")]:
            module = key[: -len(".lora_A.weight")]
            delta = lora[f"{module}.lora_B.weight"] @ lora[key]
            weight = merged[f"{module}.weight"]
            merged[f"{module}.weight"] = (weight.float() + delta).to(weight.dtype)
        return merged
