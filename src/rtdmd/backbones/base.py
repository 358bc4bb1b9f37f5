"""The flow-model protocol: what a trainer needs from a model family, and nothing more.

A backbone holds three roles of one flow model (spec section 6):

- ``"teacher"``: frozen, sampled with its classifier-free guidance (or guidance input);
- ``"generator"``: the few-step student, trained;
- ``"fake"``: the fake score that tracks the generator's distribution, trained.

Diffusers backbones implement the roles as LoRA adapters on one frozen base (teacher = adapters disabled);
the analytic world implements them as an exact velocity and two small MLPs. Trainers never look at a model's
name: they ask for a role's velocity function, ``backbone.role("generator")``, and call it as
``v = generator(x, sigma, cond)``; :func:`rtdmd.functional.samplers.rollout` takes it as it is.

Conditioning is a ``dict[str, Tensor]`` of batch-first tensors, opaque to trainers (they index its rows). Each
backbone keeps what CFG needs (for example the empty prompt's embeddings) internally.

Optional hooks (duck-typed; see docs/training.md): ``fsdp_units() -> list[nn.Module]``, the modules FSDP2
shards one by one (transformer blocks, then the roots), needed for ``run.parallel: fsdp``; ``fold(role)``, for a
process that only samples ``role`` (``rtdmd generate``): its adapters folded into the weights, so that sampling
costs what the base model's forward does; and on a kind's config class ``preflight(self, config)``, checks that
read files but load no model (weights present, pipeline family), run before any process group or model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Cond = dict[str, Tensor]
ROLES = ("teacher", "generator", "fake")
TRAINED_ROLES = ("generator", "fake")
Velocity = Callable[[Tensor, Tensor, Cond], Tensor]
"""A role's velocity function ``(x, sigma, cond) -> v ~ eps - x0``, ``sigma`` of shape ``(B,)``."""


@runtime_checkable
class Backbone(Protocol):
    device: torch.device
    sample_shape: tuple[int, ...]
    """Shape of one sample ``x`` (latents or vectors) without the batch dimension."""

    def encode(self, prompts: Sequence[str]) -> Cond:
        """Conditioning for a batch of prompts (cached where possible)."""

    def role(self, name: str, guidance: float | None = None) -> Velocity:
        """The velocity function of role ``name`` (``"teacher"``, ``"generator"`` or ``"fake"``).

        ``guidance=None`` uses the role's default: the teacher's configured CFG scale (or guidance input),
        1 (no CFG) for the generator and the fake score. Its output has the dtype of ``x``."""

    def noise(self, generators: Sequence[torch.Generator]) -> Tensor:
        """Initial noise ``(len(generators), *sample_shape)`` on ``device``, one sample per CPU generator, drawn
        exactly as the family's diffusers pipeline draws its latents from a list of generators (so that a
        seed gives the same image in ``rtdmd generate`` and in a stock pipeline)."""

    def decode(self, x: Tensor) -> Tensor:
        """What rewards see: images in [0, 1] of shape ``(B, 3, H, W)``, or the vectors themselves."""

    def generator_sigmas(self, step_list: Sequence[int]) -> Tensor:
        """The generator's levels for ``step_list`` (e.g. [1000, 750, 500, 250]) through the family's shift,
        ending in 0 (spec section 2)."""

    def teacher_sigmas(self, num_steps: int) -> Tensor:
        """The levels the family's own pipeline uses for ``num_steps`` teacher steps, ending in 0."""

    def trainable(self, role: str) -> dict[str, nn.Parameter]:
        """Named trainable tensors of ``"generator"`` or ``"fake"`` (fp32, ``requires_grad=True``)."""

    def init_students(self) -> None:
        """Bring generator and fake score to their stage-1 starting point (the teacher's function). A no-op
        for LoRA roles (B = 0); the analytic world regresses its MLPs onto the teacher's velocity."""

    def start_stage2(self) -> None:
        """Freeze the current generator and fake score (the stage-1 result) into the model and start fresh
        trainable tensors that leave both functions unchanged (spec section 5: merge, new adapters)."""
