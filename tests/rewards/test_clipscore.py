"""CLIPScore and PickScore against transformers' own CLIPModel forward on the processor's inputs."""

import pytest
import torch
from PIL import Image

from rtdmd import registry
from rtdmd.config import strict
from rtdmd.errors import UserError
from rtdmd.rewards import clip, loading
from rtdmd.rewards.clipscore import ClipScoreConfig, build_clipscore
from rtdmd.rewards.pickscore import PickScoreConfig, build_pickscore
from tests.rewards.test_clip import smooth_images

TINY = {"architecture": "config"}  # the tiny CLIP of these tests is not the published model
PROMPTS = ["a red cat", "the dog", "a red cat"]


def official(folder, images: torch.Tensor, prompts):
    """transformers' documented usage: processor for pixels, tokenizer for text, CLIPModel.forward; returns
    (cosines, logits_per_image diagonal)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(folder)).eval()
    processor = CLIPImageProcessor.from_pretrained(str(folder))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in images]
    pixels = processor(images=pil, return_tensors="pt")["pixel_values"]
    text = tokenizer(list(prompts), padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pixels, **text)
    logits = out.logits_per_image.diagonal()
    return logits / model.logit_scale.exp(), logits


@pytest.fixture(scope="module")
def clipscore(clip_folder):
    return build_clipscore(ClipScoreConfig(path=str(clip_folder), **TINY))


def test_clipscore_is_the_cosine_of_the_official_path(clip_folder, clipscore):
    images = (smooth_images(3, 32, 32, seed=5) * 255).round() / 255  # the model's input size: no resize
    cos, _ = official(clip_folder, images, PROMPTS)
    with torch.no_grad():
        ours = clipscore(images, PROMPTS)
    assert ours.dtype == torch.float32 and ours.shape == (3,)
    torch.testing.assert_close(ours, cos, atol=2e-6, rtol=0)
    assert (ours[0] - ours[1]).abs() > 1e-3  # the prompts matter


def test_clipscore_close_to_official_path_after_resize(clip_folder, clipscore):
    images = (smooth_images(3, 60, 45, seed=6) * 255).round() / 255
    cos, _ = official(clip_folder, images, PROMPTS)
    with torch.no_grad():
        ours = clipscore(images, PROMPTS)
    # The only difference is PIL's 8-bit rounding inside the resize (<= 1.5 levels, test_clip).
    torch.testing.assert_close(ours, cos, atol=2e-3, rtol=0)


def test_pickscore_is_scaled_cosine(clip_folder):
    reward = build_pickscore(PickScoreConfig(path=str(clip_folder), **TINY))
    images = (smooth_images(3, 32, 32, seed=8) * 255).round() / 255
    cos, logits = official(clip_folder, images, PROMPTS)
    with torch.no_grad():
        ours = reward(images, PROMPTS)
    torch.testing.assert_close(ours, logits, atol=2e-4, rtol=0)
    assert reward.info()["logit_scale_exp"] == pytest.approx((logits / cos).mean().item(), rel=1e-5)
    assert abs(reward.info()["logit_scale_exp"] - 1) > 1  # a real scale, not a cosine


def test_gradient_reaches_pixels_finite_difference(clip_folder):
    from transformers import CLIPModel

    built = build_clipscore(ClipScoreConfig(path=str(clip_folder), **TINY))
    # A private float64 copy of the model (the built one is shared through the loader's cache), so that
    # central differences are exact to ~1e-10.
    model = CLIPModel.from_pretrained(str(clip_folder)).double().eval().requires_grad_(False)
    embedder = clip.ClipEmbedder(model, built.embedder.tokenizer, built.embedder.preprocess)
    reward = clip.ClipCosine(embedder, built._info)
    images = smooth_images(1, 40, 36, seed=9).double().requires_grad_(True)
    reward(images, ["the dog"]).sum().backward()
    grad = images.grad
    assert (grad != 0).float().mean() > 0.9  # the resize spreads every pixel's influence
    eps = 1e-4
    for index in [(0, 0, 17, 9), (0, 2, 3, 30), (0, 1, 39, 0)]:
        plus, minus = images.detach().clone(), images.detach().clone()
        plus[index] += eps
        minus[index] -= eps
        with torch.no_grad():
            fd = (reward(plus, ["the dog"]) - reward(minus, ["the dog"])).item() / (2 * eps)
        assert fd == pytest.approx(grad[index].item(), rel=1e-4, abs=1e-9)


def test_prompt_embeddings_are_cached(clipscore, monkeypatch):
    images = smooth_images(3, 32, 32, seed=10)
    with torch.no_grad():
        first = clipscore(images, PROMPTS)
    calls = []
    monkeypatch.setattr(clipscore.embedder, "_encode", lambda prompts: calls.append(prompts))
    with torch.no_grad():
        again = clipscore(images, PROMPTS)
    assert calls == []
    torch.testing.assert_close(first, again)


def test_built_through_registry_from_root(clip_folder, monkeypatch):
    monkeypatch.setenv(loading.ROOT_ENV, str(clip_folder.parent))
    link = clip_folder.parent / "clipscore"
    if not link.exists():
        link.symlink_to(clip_folder)
    cfg = strict.build(registry.config_class("reward", "clipscore"), {"kind": "clipscore", **TINY}, "rewards[0]")
    reward = registry.builder("reward", "clipscore")(cfg, world=None, device="cpu")
    assert reward.differentiable
    with pytest.raises(Exception, match="unknown config key 'rewards\\[0\\].pth'"):
        strict.build(registry.config_class("reward", "clipscore"), {"kind": "clipscore", "pth": "x"}, "rewards[0]")


def test_missing_weights_one_line_error(tmp_path):
    with pytest.raises(UserError) as err:
        build_clipscore(ClipScoreConfig(path=str(tmp_path)))
    assert "openai/clip-vit-large-patch14" in str(err.value) and "\n" not in str(err.value)
