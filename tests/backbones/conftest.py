"""Tiny pipeline folders of every family, built once per test session, and helpers to load them."""

from __future__ import annotations

import pytest
import torch

CPU = torch.device("cpu")
PROMPTS = ["a red cube", "two blue balls left of a tree"]
HW = 16  # image side of every tiny pipeline

# family -> (builder module, config class name, config kwargs beyond path/size, stock pipeline kwargs)
FAMILIES = {
    "sd3": ("rtdmd.backbones.sd3", "SD3Config", {"max_sequence_length": 8, "teacher_guidance": 3.0},
            {"max_sequence_length": 8}),
    "sd3_pixel": ("rtdmd.backbones.sd3", "SD3Config", {"max_sequence_length": 8, "teacher_guidance": 3.0},
                  {"max_sequence_length": 8}),
    "flux1_dev": ("rtdmd.backbones.flux1", "Flux1Config", {"max_sequence_length": 8, "teacher_guidance": 3.5},
                  {"max_sequence_length": 8}),
    "flux1_cfg": ("rtdmd.backbones.flux1", "Flux1Config", {"max_sequence_length": 8, "teacher_guidance": 3.5},
                  {"max_sequence_length": 8}),
    "flux2_klein": ("rtdmd.backbones.flux2_klein", "Flux2KleinConfig",
                    {"max_sequence_length": 64, "teacher_guidance": 4.0, "hidden_layers": (1, 2)},
                    {"max_sequence_length": 64, "text_encoder_out_layers": (1, 2)}),
}


def config(family: str, folder, **overrides):
    import importlib

    module, cls, kwargs, _ = FAMILIES[family]
    return getattr(importlib.import_module(module), cls)(path=str(folder), height=HW, width=HW,
                                                         **{**kwargs, **overrides})


def build(family: str, folder, dtype=torch.float32, **overrides):
    import importlib

    module = importlib.import_module(FAMILIES[family][0])
    return module.build(config(family, folder, **overrides), world=None, device=CPU, dtype=dtype)


def stock_pipeline(backbone):
    """A fresh stock pipeline of the backbone's folder (pixel space: ``vae_scale_factor = 1``)."""
    from rtdmd.backbones.loading import load_pipeline

    pipe = load_pipeline(type(backbone.pipe), str(backbone.pipe.rtdmd_folder), device=CPU, dtype=backbone.dtype)
    if pipe.vae is None:
        pipe.vae_scale_factor = 1
    return pipe


def pipeline_latents(family: str, backbone, x):
    """``x`` in the layout the stock pipeline returns for ``output_type="latent"`` (FLUX.2-klein returns the
    VAE's latents; SD3 and FLUX.1 return ``x`` as it is)."""
    return backbone.vae_latents(x) if family.startswith("flux2") else x


def perturb(backbone, role: str, scale: float, seed: int) -> None:
    """Move the role's trainable tensors (B included) to random values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.trainable(role).values():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one intra-op thread avoids OpenMP hand-offs that dominate milliseconds-long ops (and thrash
    # when the two cores are shared).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
