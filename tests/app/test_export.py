"""Export: the generator's LoRA loaded into a stock pipeline with the CPS scheduler reproduces our generation
(stochastic CPS, eta = 0.9, after stage 2: stage-1 + stage-2 adapters as one LoRA); so does the merged folder;
``decode`` equals the stock pipeline's images."""

import pytest
import torch

import rtdmd.scheduler
from rtdmd.app import export
from rtdmd.app.sampling import sample, seeded_generators
from rtdmd.backbones.loading import load_pipeline
from rtdmd.errors import UserError
from tests.backbones.conftest import CPU, FAMILIES, HW, PROMPTS, build, perturb, pipeline_latents, stock_pipeline

SEEDS = [5, 6]


def trained(family, folders):
    backbone = build(family, folders[family])
    perturb(backbone, "generator", 0.3, seed=1)
    backbone.start_stage2()
    perturb(backbone, "generator", 0.2, seed=2)
    return backbone


def run_stock(pipe, family, output_type="latent"):
    gens = seeded_generators(SEEDS)
    pipe.scheduler.set_generator(gens)
    return pipe(prompt=PROMPTS, height=HW, width=HW, num_inference_steps=4, guidance_scale=1.0, generator=gens,
                output_type=output_type, **FAMILIES[family][3]).images


@pytest.mark.parametrize("family", ["sd3", "flux1_dev", "flux2_klein"])
def test_exported_lora_in_stock_pipeline_reproduces_generation(family, folders, tmp_path):
    backbone = trained(family, folders)
    x = sample(backbone, "generator", backbone.encode(PROMPTS), backbone.generator_sigmas((1000, 750, 500, 250)),
               0.9, seeded_generators(SEEDS))
    out = export.export_lora(backbone, tmp_path / "lora", eta=0.9)
    pipe = stock_pipeline(backbone)
    pipe.scheduler = rtdmd.scheduler.CPSScheduler.from_pretrained(out, subfolder="scheduler")
    base = run_stock(pipe, family)
    pipe.load_lora_weights(out)
    ref = run_stock(pipe, family)
    ours = pipeline_latents(family, backbone, x)
    assert (base - ref).abs().max() > 1e-2  # the LoRA matters
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # Decoded images: what the stock pipeline returns as a tensor in [0, 1].
    images = run_stock(pipe, family, output_type="pt")
    torch.testing.assert_close(backbone.decode(x), images, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["sd3", "flux2_klein"])
def test_merged_folder_is_a_standalone_pipeline(family, folders, tmp_path):
    backbone = trained(family, folders)
    x = sample(backbone, "generator", backbone.encode(PROMPTS), backbone.generator_sigmas((1000, 750, 500, 250)),
               0.9, seeded_generators(SEEDS))
    out = export.export_merged(backbone, tmp_path / "merged", eta=0.9)
    pipe = load_pipeline(type(backbone.pipe), str(out), device=CPU, dtype=torch.float32)
    assert isinstance(pipe.scheduler, rtdmd.scheduler.CPSScheduler)
    assert not any("lora" in k for k in pipe.transformer.state_dict())
    torch.testing.assert_close(pipeline_latents(family, backbone, x), run_stock(pipe, family), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="not empty"):
        export.export_merged(backbone, out)


def test_pixel_space_decode_and_lora(folders, tmp_path):
    backbone = trained("sd3_pixel", folders)
    x = sample(backbone, "generator", backbone.encode(PROMPTS), backbone.generator_sigmas((1000, 750, 500, 250)),
               0.9, seeded_generators(SEEDS))
    torch.testing.assert_close(backbone.decode(x), ((x + 1) / 2).clamp(0, 1), rtol=0, atol=0)
    out = export.export_lora(backbone, tmp_path / "lora")
    pipe = stock_pipeline(backbone)
    pipe.scheduler = rtdmd.scheduler.CPSScheduler.from_pretrained(out, subfolder="scheduler")
    pipe.load_lora_weights(out)
    torch.testing.assert_close(x, run_stock(pipe, "sd3_pixel"), rtol=1e-5, atol=1e-5)
