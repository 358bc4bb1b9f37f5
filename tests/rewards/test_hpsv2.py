"""HPSv2.1: the OpenCLIP -> transformers key mapping against an independent forward that reads the original
keys (tests/rewards/openclip_reference.py), on a tiny random checkpoint in the published format."""

import numpy as np
import pytest
import torch
from PIL import Image

from rtdmd.errors import UserError
from rtdmd.rewards import clip_preprocess, hpsv2
from tests.rewards import openclip_reference as ref
from tests.rewards.test_clip import smooth_images

PROMPTS = ["a red cat", "of the dog dog", "a photo of the cat"]
HEADS = dict(vision_heads=2, text_heads=2, architecture="config")  # a tiny model, not the published one


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(clip_preprocess.OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(clip_preprocess.OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def reference_scores(state, tokenizer, pixels, prompts):
    with torch.no_grad():
        image = ref.encode_image(state, normalise(pixels), heads=2)
        text = ref.encode_text(state, ref.openclip_tokens(tokenizer, prompts, 16), heads=2)
    return (image * text).sum(-1)


@pytest.fixture(scope="module")
def reward(hps_folder):
    return hpsv2.build_hpsv2(hpsv2.HPSv2Config(path=str(hps_folder[0]), **HEADS))


def test_mapped_model_equals_openclip_forward(hps_folder, reward):
    _, state = hps_folder
    images = smooth_images(3, 28, 28, seed=12)  # the model's input size: preprocessing is only normalisation
    with torch.no_grad():
        ours = reward(images, PROMPTS)
    expected = reference_scores(state, reward.embedder.tokenizer, images, PROMPTS)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert ours.std() > 1e-3


def test_non_square_images_use_hpsv2_resize_longest_and_pad(hps_folder, reward):
    """HPSv2's own transform: resize the longest side to 224 (here 28), zero-pad, normalise; written here with
    PIL's float bicubic and numpy."""
    _, state = hps_folder
    images = smooth_images(2, 45, 30, seed=13)
    padded = torch.zeros(2, 3, 28, 28)
    for b in range(2):
        for c in range(3):
            channel = Image.fromarray(images[b, c].numpy().astype(np.float32), mode="F").resize((19, 28), Image.BICUBIC)
            padded[b, c, :, 4:23] = torch.from_numpy(np.array(channel))  # pad 9 = 4 left + 5 right
    with torch.no_grad():
        ours = reward(images, PROMPTS[:2])
    torch.testing.assert_close(ours, reference_scores(state, reward.embedder.tokenizer, padded, PROMPTS[:2]),
                               atol=2e-5, rtol=0)


def test_checkpoint_variants_load_the_same(tmp_path, hps_folder, reward):
    """A DDP "module." prefix, a flat state dict and a .safetensors file give the same model; a half-precision
    checkpoint (as "compressed" files may be) loads into fp32 parameters."""
    from safetensors.torch import save_file

    folder, state = hps_folder
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "flat.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "hps.safetensors"))
    torch.save({"state_dict": {k: v.half() for k, v in state.items()}}, tmp_path / "half.pt")
    images = smooth_images(2, 28, 28, seed=14)
    with torch.no_grad():
        expected = reward(images, PROMPTS[:2])
        for checkpoint in ("flat.pt", "hps.safetensors", "half.pt"):
            other = hpsv2.build_hpsv2(hpsv2.HPSv2Config(path=str(tmp_path), checkpoint=checkpoint, **HEADS))
            tolerance = 5e-3 if checkpoint == "half.pt" else 1e-6
            torch.testing.assert_close(other(images, PROMPTS[:2]), expected, atol=tolerance, rtol=0)
            assert {p.dtype for p in other.embedder.model.parameters()} == {torch.float32}


def test_gradient_reaches_pixels(reward):
    images = smooth_images(1, 40, 30, seed=15).requires_grad_(True)
    reward(images, ["a red cat"]).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and reward.differentiable


def test_config_from_shapes_and_rejections(hps_folder):
    _, state = hps_folder
    ids = {"eos_token_id": 1, "bos_token_id": 0, "pad_token_id": 1}
    config = hpsv2.clip_config(state, vision_heads=2, text_heads=4, hidden_act="gelu", token_ids=ids)
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.image_size, v.patch_size, v.num_hidden_layers, v.intermediate_size) == (32, 28, 7, 2, 128)
    assert (t.hidden_size, t.max_position_embeddings, t.num_hidden_layers, config.projection_dim) == (24, 16, 2, 20)
    with pytest.raises(UserError, match="not divisible"):
        hpsv2.clip_config(state, vision_heads=3, text_heads=2, hidden_act="gelu", token_ids=ids)
    with pytest.raises(UserError, match="unexpected key 'visual.attnpool.weight'"):
        hpsv2.openclip_to_transformers({**state, "visual.attnpool.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="not an OpenCLIP ViT block"):
        hpsv2.openclip_to_transformers({**state, "transformer.resblocks.0.ls_1.gamma": torch.zeros(1)})
    partial = {k: v for k, v in state.items() if k != "ln_final.bias"}
    with pytest.raises(UserError, match="missing"):
        hpsv2.clip_from_openclip(partial, config, torch.float32)


def test_missing_files_name_their_source(tmp_path, hps_folder):
    with pytest.raises(UserError, match="xswu/HPSv2"):
        hpsv2.build_hpsv2(hpsv2.HPSv2Config(path=str(tmp_path), **HEADS))
    (tmp_path / "HPS_v2.1_compressed.pt").write_bytes((hps_folder[0] / "HPS_v2.1_compressed.pt").read_bytes())
    with pytest.raises(UserError, match="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        hpsv2.build_hpsv2(hpsv2.HPSv2Config(path=str(tmp_path), **HEADS))
