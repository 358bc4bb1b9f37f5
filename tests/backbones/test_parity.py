"""Our teacher sampler (eta = 0, N Euler steps, the teacher's guidance) against the stock diffusers pipelines:
same seeds and prompts, the pipeline's own latents (``output_type="latent"``), tight tolerance."""

import pytest
import torch

from rtdmd.app.sampling import sample, seeded_generators
from tests.backbones.conftest import FAMILIES, HW, PROMPTS, build, pipeline_latents, stock_pipeline

STEPS = 5


def stock_kwargs(family: str, backbone) -> dict:
    g = backbone.cfg.teacher_guidance
    if family == "flux1_cfg":  # no guidance embedding: true CFG against the empty prompt
        return {"true_cfg_scale": g, "negative_prompt": [""] * len(PROMPTS), "guidance_scale": 1.0}
    return {"guidance_scale": g}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_teacher_sampler_matches_stock_pipeline(family, folders):
    backbone = build(family, folders[family])
    x = sample(backbone, "teacher", backbone.encode(PROMPTS), backbone.teacher_sigmas(STEPS), 0.0,
               seeded_generators([3, 4]))
    pipe = stock_pipeline(backbone)
    ref = pipe(prompt=PROMPTS, height=HW, width=HW, num_inference_steps=STEPS, generator=seeded_generators([3, 4]),
               output_type="latent", **stock_kwargs(family, backbone), **FAMILIES[family][3]).images
    ours = pipeline_latents(family, backbone, x)
    assert ours.shape == ref.shape
    assert ref.abs().max() > 1.0  # a real sample, not zeros
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["sd3", "flux1_cfg", "flux2_klein"])
def test_guidance_changes_the_teacher(family, folders):
    # The parity above would also hold if both sides ignored guidance; check that guidance acts.
    backbone = build(family, folders[family])
    cond = backbone.encode(PROMPTS[:1])
    x = backbone.noise(seeded_generators([0]))
    sigma = torch.tensor([0.7])
    guided = backbone.role("teacher")(x, sigma, cond)
    plain = backbone.role("teacher", 1.0)(x, sigma, cond)
    assert (guided - plain).abs().max() > 1e-3


def test_noise_is_the_pipelines_initial_latents(folders):
    backbone = build("flux1_dev", folders["flux1_dev"])
    pipe = stock_pipeline(backbone)
    ref, _ = pipe.prepare_latents(2, 4, HW, HW, torch.float32, torch.device("cpu"), seeded_generators([8, 9]))
    torch.testing.assert_close(backbone.noise(seeded_generators([8, 9])), ref, rtol=0, atol=0)
    assert backbone.noise(seeded_generators([8])).shape == (1, *backbone.sample_shape)
