"""A diffusers scheduler for the few-step generator: CPS steps on the generator's levels (spec sections 2-3).

With a stock pipeline, a generator LoRA exported by :mod:`rtdmd.app.export` and this scheduler, the pipeline produces
the images of ``rtdmd.app.sampling.sample(backbone, "generator", ...)`` + ``backbone.decode`` for the same seeds::

    pipe.scheduler = CPSScheduler.from_pretrained(export_dir, subfolder="scheduler")
    generators = [torch.Generator().manual_seed(s) for s in seeds]   # one per image
    pipe.scheduler.set_generator(generators)                          # see below
    images = pipe(prompts, num_inference_steps=4, guidance_scale=1.0, generator=generators).images

The levels are ``denoising_step_list / 1000`` through the family's shift (static ``shift``, or the ``mu`` the
pipeline passes when ``use_dynamic_shifting``), then 0. Each step is
``Phi_eta(x, v; sigma -> sigma_next; z)`` computed by :func:`rtdmd.functional.samplers.cps_step`; ``z`` is drawn
only on stochastic steps (``eta > 0`` and ``sigma_next > 0``), with ``randn_tensor`` from the per-image
generators, in float32.

Diffusers pipelines do not pass their ``generator`` to ``scheduler.step``: give the scheduler the same
generator objects with :meth:`CPSScheduler.set_generator` (or call ``step(..., generator=...)`` yourself), so
that the noise of the steps continues each image's stream after its initial latents, as in ``rtdmd generate``.
The step index is looked up from the timestep (no mutable step counter); ``use_flow_sigmas`` is set so that
FLUX pipelines do not impose their own many-step sigmas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from rtdmd.functional.samplers import cps_step
from rtdmd.functional.schedules import generator_sigmas


@dataclass
class CPSSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor


class CPSScheduler(SchedulerMixin, ConfigMixin):
    """Coefficient-preserving sampling on the few-step generator's levels.

    Args:
        denoising_step_list (`tuple[int]`, defaults to (1000, 750, 500, 250)):
            The generator's steps; levels are ``step / 1000`` through the shift, then 0.
        eta (`float`, defaults to 0.9):
            CPS angle ``theta = eta * pi / 2``; 0 is the deterministic (DDIM-like) step.
        shift (`float`, defaults to 1.0):
            Static shift ``shift * u / (1 + (shift - 1) u)`` (SD3: 3.0), used unless ``use_dynamic_shifting``.
        use_dynamic_shifting (`bool`, defaults to False):
            Exponential shift with the ``mu`` the pipeline passes to ``set_timesteps`` (FLUX.1, FLUX.2).
        base_shift, max_shift, base_image_seq_len, max_image_seq_len:
            Read by FLUX.1's pipeline to compute ``mu``; kept from the family's scheduler.
        use_flow_sigmas (`bool`, defaults to True):
            Makes FLUX pipelines call ``set_timesteps`` without their own sigma grid.
    """

    order = 1
    _compatibles = []

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, denoising_step_list: tuple[int, ...] = (1000, 750, 500, 250),
                 eta: float = 0.9, shift: float = 1.0, use_dynamic_shifting: bool = False, base_shift: float = 0.5,
                 max_shift: float = 1.15, base_image_seq_len: int = 256, max_image_seq_len: int = 4096,
                 use_flow_sigmas: bool = True):
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.generator = None
        self.num_inference_steps = len(denoising_step_list)
        self.sigmas = None
        self.timesteps = None
        if not use_dynamic_shifting:
            self.set_timesteps()

    def set_generator(self, generator: torch.Generator | list[torch.Generator] | None) -> None:
        """The generator(s) of the step noise: the same objects the pipeline gets as ``generator``."""
        self.generator = generator

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Accepted for pipeline compatibility; steps are found from their timestep, so nothing is stored."""

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas=None, mu: float | None = None, timesteps=None) -> None:
        steps = tuple(self.config.denoising_step_list)
        if num_inference_steps is not None and num_inference_steps != len(steps):
            raise ValueError(f"this scheduler samples the generator's {len(steps)} levels: pass "
                             f"num_inference_steps={len(steps)} (got {num_inference_steps})")
        if sigmas is not None or timesteps is not None:
            raise ValueError("CPSScheduler sets its own levels from denoising_step_list; do not pass sigmas/timesteps")
        if self.config.use_dynamic_shifting:
            if mu is None:
                raise ValueError("use_dynamic_shifting needs the pipeline's mu in set_timesteps(mu=...)")
            levels = generator_sigmas(steps, mu=mu)
        else:
            levels = generator_sigmas(steps, shift=self.config.shift)
        self.sigmas = levels.to(device)
        self.timesteps = levels[:-1].to(device) * self.config.num_train_timesteps
        self.num_inference_steps = len(steps)

    def index_for_timestep(self, timestep: float | torch.Tensor) -> int:
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[0].to(self.timesteps.device)
        return int((self.timesteps - t).abs().argmin())

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | list[torch.Generator] | None = None,
             return_dict: bool = True) -> CPSSchedulerOutput | tuple:
        """One CPS step from the level of ``timestep`` to the next level (spec section 3)."""
        if self.sigmas is None:
            raise ValueError("call set_timesteps before step")
        i = self.index_for_timestep(timestep)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        eta = float(self.config.eta)
        noise = None
        if eta > 0 and sigma_next > 0:
            noise = randn_tensor(sample.shape, generator=generator if generator is not None else self.generator,
                                 device=sample.device, dtype=torch.float32)
        prev = cps_step(sample.float(), model_output.float(), sigma, sigma_next, eta, noise).to(sample.dtype)
        return CPSSchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
