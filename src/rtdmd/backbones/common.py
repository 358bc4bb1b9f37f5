"""Small pieces shared by the diffusers backbones (SD3, FLUX.1, FLUX.2-klein): the prompt cache, classifier-free
guidance, the role's default guidance, config checks, the generator's schedule through the family's shift, and the
protocol's role methods for LoRA roles."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rtdmd.backbones.base import ROLES, Cond, Velocity
from rtdmd.config.strict import check
from rtdmd.errors import UserError
from rtdmd.functional import schedules

if TYPE_CHECKING:
    from rtdmd.backbones.lora import RoleAdapters

ENCODE_BATCH = 32  # prompts per text-encoder batch of the up-front encode (its activations must fit a GPU)
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
"""LoRA targets of the published recipe: the attention projections of the joint blocks (spec 4.7)."""


def check_common(cfg, multiple: int) -> None:
    """Checks every diffusers backbone config shares (called from ``__post_init__``)."""
    check(cfg.teacher_guidance >= 1, f"teacher_guidance must be >= 1 (1 = no guidance), got {cfg.teacher_guidance}")
    check(cfg.height > 0 and cfg.width > 0 and cfg.height % multiple == 0 and cfg.width % multiple == 0,
          f"height and width must be positive multiples of {multiple}, got {cfg.height}x{cfg.width}")
    check(1 <= cfg.max_sequence_length <= 512,
          f"max_sequence_length must lie in [1, 512], got {cfg.max_sequence_length}")
    check(cfg.rank >= 1 and cfg.alpha > 0, f"rank must be >= 1 and alpha > 0, got rank {cfg.rank}, alpha {cfg.alpha}")
    check(len(cfg.target_modules) >= 1, "target_modules must name at least one module (e.g. to_q)")
    check(cfg.prompt_cache >= 1, f"prompt_cache must be >= 1 prompts, got {cfg.prompt_cache}")


class PromptCache:
    """Conditioning rows keyed by prompt text, computed once: an LRU of ``capacity`` prompts (the training prompt
    set when it fits), so that the text encoders run once per prompt; the empty prompt (CFG's unconditional
    branch) is never evicted. ``encode`` maps a list of prompts to a batch-first conditioning dict.

    Rows live in host memory and the rows a call asks for are copied to ``device``, except the pinned prompts,
    which stay on ``device`` (the teacher looks the empty prompt up at every call). With a ``store``
    (:class:`~rtdmd.backbones.embedding_store.EmbeddingStore`) a missing row is read from disk before it is
    encoded, and every encoded row is written there. After :meth:`close` (the text encoders were freed) a row
    found nowhere is a :class:`UserError`."""

    def __init__(self, encode: Callable[[list[str]], Cond], capacity: int, device: torch.device | str,
                 pinned: Sequence[str] = ("",), store=None):
        self._encode = encode
        self.capacity = capacity
        self.pinned = frozenset(pinned)
        self.device = torch.device(device)
        self.store = store
        self._rows: OrderedDict[str, Cond] = OrderedDict()

    def close(self) -> None:
        """The text encoders are gone: from now on, rows come from memory or the store only."""
        self._encode = None

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> Cond:
        prompts = list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if missing:
            self._fill(missing)
        rows = []
        for prompt in prompts:
            self._rows.move_to_end(prompt)
            rows.append(self._rows[prompt])
        out = {k: torch.cat([r[k].to(self.device, non_blocking=True) for r in rows]) for k in rows[0]}
        # Only walk the cache when it is over capacity: the teacher looks up the empty prompt at every call.
        excess = len(self._rows) - len(self.pinned & self._rows.keys()) - max(self.capacity, len(prompts))
        if excess > 0:
            evictable = [p for p in self._rows if p not in self.pinned]  # least recently used first
            for prompt in evictable[:excess]:
                del self._rows[prompt]
        return out

    def _fill(self, missing: list[str]) -> None:
        stored = {p: row for p in missing if self.store is not None and (row := self.store.get(p)) is not None}
        absent = [p for p in missing if p not in stored]
        if absent and self._encode is None:
            raise UserError(f"prompt {absent[0]!r} was not encoded before run.free_text_encoders freed the text "
                            "encoders (only the training and evaluation prompts are): set run.free_text_encoders "
                            "false, or add the prompt to the world's prompt files")
        if absent:
            batch = self._encode(absent)
            for i, prompt in enumerate(absent):  # clones: an evicted row must not pin its whole batch
                stored[prompt] = {k: v[i:i + 1].clone() for k, v in batch.items()}
                if self.store is not None:
                    self.store.put(prompt, stored[prompt])
        for prompt in missing:
            home = self.device if prompt in self.pinned else "cpu"
            self._rows[prompt] = {k: v.to(home) for k, v in stored[prompt].items()}

    def __len__(self) -> int:
        return len(self._rows)


def fsdp_units(transformers) -> list[nn.Module]:
    """The units FSDP2 shards (``run.parallel: fsdp``), in order: every block of each transformer (joint and
    single-stream), then the transformer itself (embeddings, final norm and projection). A base shared by several
    roles is listed once; text encoders and the VAE stay replicated (they only encode prompts and decode)."""
    units: list[nn.Module] = []
    for model in dict.fromkeys(transformers):
        for name in ("transformer_blocks", "single_transformer_blocks"):
            units += list(getattr(model, name, None) or [])
        units.append(model)
    return units


def role_guidance(role: str, guidance: float | None, teacher_guidance: float) -> float:
    """The guidance of a role: explicit, or the role's default (teacher: its configured scale; generator and
    fake score: 1, spec section 0)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {ROLES})")
    if guidance is not None:
        return float(guidance)
    return float(teacher_guidance) if role == "teacher" else 1.0


def cfg_combine(v_uncond: Tensor, v_cond: Tensor, scale: float) -> Tensor:
    """``v_u + g (v_c - v_u)`` computed in float32 (spec section 0)."""
    v_uncond = v_uncond.float()
    return v_uncond + scale * (v_cond.float() - v_uncond)


def uncond_like(uncond: Cond, batch: int) -> Cond:
    return {k: v.expand(batch, *v.shape[1:]) for k, v in uncond.items()}


def guided(forward: Callable[[Tensor, Tensor, Cond], Tensor], h: Tensor, timestep: Tensor, cond: Cond,
           encode: Callable[[list[str]], Cond], scale: float) -> Tensor:
    """A velocity with classifier-free guidance ``scale``: ``forward(h, timestep, cond)`` alone at scale 1, else
    one batched ``[uncond; cond]`` forward (``uncond``: ``encode([""])``, looked up only then) combined by
    :func:`cfg_combine` (float32)."""
    if scale == 1.0:
        return forward(h, timestep, cond)
    uncond = uncond_like(encode([""]), h.shape[0])
    both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
    return cfg_combine(*forward(torch.cat([h, h]), torch.cat([timestep, timestep]), both).chunk(2), scale)


def shifted_generator_sigmas(step_list: Sequence[int], scheduler_config, mu: float | None) -> Tensor:
    """Generator levels through the family scheduler's shift: static ``shift`` unless the scheduler shifts
    dynamically, in which case ``mu`` (the family's resolution-dependent value) is used (spec section 2)."""
    if scheduler_config.get("use_dynamic_shifting", False):
        return schedules.generator_sigmas(step_list, mu=mu)
    return schedules.generator_sigmas(step_list, shift=float(scheduler_config.get("shift", 1.0)))


def scheduler_mu(scheduler_config, image_seq_len: int) -> float:
    """The dynamic-shift ``mu`` of ``image_seq_len`` tokens with the constants of the family's scheduler config
    (the defaults are FLUX.1's, as its pipeline's)."""
    c = scheduler_config
    return schedules.dynamic_shift_mu(image_seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                                      c.get("base_shift", 0.5), c.get("max_shift", 1.15))


def scheduler_sigmas(scheduler, num_steps: int, **kwargs) -> Tensor:
    """The levels a fresh copy of the family's own scheduler uses for ``num_steps`` (``set_timesteps`` with the
    arguments the family's pipeline passes), ending in 0, float32 on the CPU."""
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(num_steps, **kwargs)
    return fresh.sigmas.detach().float().cpu()


class LoraRoleMethods:
    """The protocol's role methods for a backbone whose roles are LoRA adapters (``self.roles``, a
    :class:`~rtdmd.backbones.lora.RoleAdapters`): the same for every diffusers family."""

    roles: "RoleAdapters"
    autocast_dtype: torch.dtype | None = None  # model forwards under torch.autocast in this dtype (None: off)

    def role(self, name: str, guidance: float | None = None) -> Velocity:
        scale = role_guidance(name, guidance, self.cfg.teacher_guidance)
        return lambda x, sigma, cond: self._velocity(name, x, sigma, cond, scale)

    def trainable(self, role: str) -> dict[str, nn.Parameter]:
        return self.roles.trainable(role)

    def init_students(self) -> None:
        """Nothing to do: LoRA adapters start with B = 0, i.e. each student starts as its base."""

    def fsdp_units(self) -> list[nn.Module]:
        return fsdp_units(self.roles.bases.values())

    # Text encoders (run.free_text_encoders, run.embedding_cache)
    ENCODER_SETTINGS: tuple[str, ...] = ("max_sequence_length",)  # config keys that change an embedding

    def text_encoder_names(self) -> list[str]:
        """The pipeline's text encoders and tokenizers (the components a prompt embedding depends on)."""
        return [n for n in self.pipe.components if n.startswith(("text_encoder", "tokenizer"))]

    def embedding_key(self) -> dict:
        """What decides a prompt's embedding: the family, its encoder settings, the dtype, and the text encoders'
        files (:func:`~rtdmd.backbones.embedding_store.component_identity`)."""
        from rtdmd.backbones.embedding_store import component_identity

        return {"kind": self.cfg.kind, "dtype": str(self.dtype),
                "settings": {k: getattr(self.cfg, k) for k in self.ENCODER_SETTINGS},
                "components": component_identity(self.pipe.rtdmd_folder, self.text_encoder_names())}

    def precompute_embeddings(self, prompt_sets: Sequence[Sequence[str]], *, cache_dir: str | None = None,
                              free_text_encoders: bool = False) -> None:
        """Encode each prompt set in batches of ``ENCODE_BATCH`` prompts (one batch for a set that small: the
        grouping the loops used, so every row has the same bits as before) and the empty prompt, reading and
        writing ``cache_dir`` when given; then optionally free the text encoders. Without a disk cache every row
        must stay in (host) memory once the encoders are gone."""
        from rtdmd.backbones.embedding_store import EmbeddingStore

        if cache_dir:
            self._cache.store = EmbeddingStore(cache_dir, self.embedding_key())
        total = len({p for prompts in prompt_sets for p in prompts}) + 1
        if free_text_encoders and self._cache.store is None:
            self._cache.capacity = max(self._cache.capacity, total)
        for prompts in (*prompt_sets, [""]):
            prompts = list(dict.fromkeys(prompts))
            for first in range(0, len(prompts), ENCODE_BATCH):
                self._cache(prompts[first:first + ENCODE_BATCH])
        if free_text_encoders:
            self.free_text_encoders()

    def free_text_encoders(self) -> None:
        """Drop the text encoders (their memory returns once nothing else holds them); prompts are then looked up
        in the cache only."""
        for name in self.text_encoder_names():
            if name.startswith("text_encoder") and getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)
        self._cache.close()

    def enable_autocast(self, dtype: torch.dtype) -> None:
        """``run.autocast``: the model's forward passes under ``torch.autocast(dtype)`` (see :meth:`precision`)."""
        self.autocast_dtype = dtype

    def precision(self):
        """The context of a model forward: autocast in :attr:`autocast_dtype` when set. Only the transformer runs
        in it; what the family does with its output (CFG combination, CPS steps, losses) happens after the output
        is cast back to float32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def compile_blocks(self, backend: str) -> None:
        """``run.compile``: :meth:`RoleAdapters.compile_blocks`."""
        self.roles.compile_blocks(backend)

    def enable_activation_checkpointing(self) -> None:
        """``run.activation_checkpointing``: per-block checkpointing of the passes with gradient
        (:meth:`RoleAdapters.enable_checkpointing`), and of the VAE decoder's blocks, which stage 2's reward
        back-propagation decodes with gradient (at 512 px its activations outweigh the transformer's)."""
        self.roles.enable_checkpointing()
        vae = self.pipe.vae
        if vae is not None and getattr(vae, "_supports_gradient_checkpointing", False):
            vae.enable_gradient_checkpointing(gradient_checkpointing_func=self.roles.checkpoint)

    def start_stage2(self) -> None:
        self.roles.start_stage2()

    def fold(self, role: str) -> None:
        """Sampling only: ``role``'s adapters folded into its base (:meth:`RoleAdapters.fold`)."""
        self.roles.fold(role)


SHIFT_KEYS = ("shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len")


def shift_config(scheduler_config) -> dict:
    """The scheduler settings that decide how a family shifts its levels (static shift or dynamic mu), for the
    CPS scheduler of an export."""
    return {k: scheduler_config[k] for k in SHIFT_KEYS if k in scheduler_config}

