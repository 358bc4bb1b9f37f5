"""The shipped teacher is a stock diffusers StableDiffusion3Pipeline folder in pixel space."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdmd.worlds.shapes import ASSETS, oracle, prompts, teacher

FOLDER = ASSETS / "teacher"
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def pipe():
    pipe = teacher.load_pipeline(FOLDER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_folder_is_small_and_has_null_components():
    size = sum(f.stat().st_size for f in FOLDER.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["vae"] == index["text_encoder_3"] == index["tokenizer_3"] == [None, None]
    assert index["text_encoder"] == ["transformers", "CLIPTextModelWithProjection"]
    assert not list(FOLDER.rglob("*.bin")) and not list(FOLDER.rglob("*.pt"))  # safetensors only


def test_stock_from_pretrained_needs_the_null_components_passed():
    from diffusers import StableDiffusion3Pipeline

    with pytest.raises(ValueError, match="expected"):
        StableDiffusion3Pipeline.from_pretrained(str(FOLDER))


def test_tokenizer_keeps_every_word_whole(pipe):
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        for word in prompts.vocabulary():
            assert len(tok(word).input_ids) == 3  # BOS, the word, EOS
        assert tok.model_max_length == teacher.TOKENS


def test_script_builds_the_shipped_tokenizer(pipe):
    """scripts/train_world.py reproduces the teacher only if it tokenizes exactly as the shipped folder does."""
    texts = [r["prompt"] for r in prompts.grammar()] + ["", "an unknown word"]
    assert teacher.build_tokenizer()(texts).input_ids == pipe.tokenizer(texts).input_ids


def test_relearned_bpe_keeps_words_whole():
    from transformers import CLIPTokenizer

    vocab, merges = teacher.learn_tokenizer_files()
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    assert all(len(tok(word).input_ids) == 3 for word in prompts.vocabulary())


def test_stock_pipeline_runs_in_pixel_space(pipe):
    assert pipe.vae is None and pipe.text_encoder_3 is None
    out = pipe("a red circle", num_inference_steps=28, guidance_scale=5.0, output_type="latent",
               max_sequence_length=teacher.MAX_SEQUENCE_LENGTH, generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_pipeline_equals_a_hand_written_euler_cfg_sampler(pipe):
    """Second implementation: scripts/train_world.py's sampler (cached stock encode_prompt, Euler on the
    scheduler's grid, batched CFG) gives the stock pipeline's images for the same seeds."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train_world
    finally:
        sys.path.remove(str(SCRIPTS))
    texts = ["two squares", "a circle left of a triangle"]
    shift = pipe.scheduler.config.shift
    stock = pipe(texts, num_inference_steps=12, guidance_scale=4.0, output_type="latent",
                 max_sequence_length=teacher.MAX_SEQUENCE_LENGTH,
                 generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images
    embeds, pooled = train_world.encode_all(pipe, texts + [""])
    mine = train_world.sample_teacher(pipe.transformer, embeds[:2], pooled[:2], embeds[2:], pooled[2:], 12, 4.0,
                                      [torch.Generator().manual_seed(s) for s in (3, 4)],
                                      train_world.pipeline_sigmas(12, shift))
    assert torch.allclose(mine, ((stock + 1) / 2).clamp(0, 1), atol=1e-4)


def test_teacher_draws_single_coloured_objects(pipe):
    """A quality floor on an easy tag at the measured CFG (all per-tag accuracies: assets/shapes/README.md)."""
    cfg = json.loads((ASSETS / "teacher_metrics.json").read_text())["cfg"]
    records = [r for r in prompts.grammar() if r["tag"] == "colors"]
    latents = pipe([r["prompt"] for r in records], num_inference_steps=28, guidance_scale=cfg, output_type="latent",
                   max_sequence_length=teacher.MAX_SEQUENCE_LENGTH,
                   generator=[torch.Generator().manual_seed(i) for i in range(len(records))]).images
    correct = oracle.score(((latents + 1) / 2).clamp(0, 1).numpy(), records)
    assert np.mean(correct) >= 0.5  # measured on held-out prompts: 1.0


def test_sd3_backbone_loads_the_teacher_and_matches_the_pipeline(pipe):
    """The world's teacher through rtdmd's SD3 backbone (the code that loads real SD3): same images as the
    stock pipeline for the same seeds, 32x32 pixel samples, the unshifted 4-step generator grid."""
    from rtdmd.app.sampling import sample, seeded_generators
    from rtdmd.backbones.sd3 import SD3Config, build

    cfg = SD3Config(path=str(FOLDER), teacher_guidance=4.5, height=32, width=32,
                    max_sequence_length=teacher.MAX_SEQUENCE_LENGTH)
    backbone = build(cfg, world=None, device=torch.device("cpu"), dtype=torch.float32)
    assert backbone.sample_shape == (3, 32, 32)
    assert torch.allclose(backbone.generator_sigmas([1000, 750, 500, 250]), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    texts = ["two squares", "a red circle and a blue triangle"]
    x = sample(backbone, "teacher", backbone.encode(texts), backbone.teacher_sigmas(10), 0.0, seeded_generators([5, 6]))
    stock = pipe(texts, num_inference_steps=10, guidance_scale=4.5, output_type="latent",
                 max_sequence_length=teacher.MAX_SEQUENCE_LENGTH, generator=seeded_generators([5, 6])).images
    assert torch.allclose(x, stock, atol=1e-5)
    assert torch.allclose(backbone.decode(x), ((stock + 1) / 2).clamp(0, 1), atol=1e-5)
