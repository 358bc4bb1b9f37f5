"""Differentiable CLIP preprocessing against PIL and transformers' processor; where reward files are looked up."""

import numpy as np
import pytest
import torch
from PIL import Image

from rtdmd.errors import UserError
from rtdmd.rewards import clip, clip_preprocess, loading


def smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Natural-image-like content in [0.25, 0.75]: a few low-frequency waves per channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    out = 0.5 * torch.ones(batch, 3, height, width)
    for _ in range(4):
        fy, fx, phase = torch.rand(3, generator=g) * torch.tensor([6.0, 6.0, 6.28])
        amp = 0.06 * torch.rand(batch, 3, 1, 1, generator=g)
        out = out + amp * torch.sin(6.28 * (fy * y + fx * x) + phase)
    return out


def pil_float_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) -> (3, h, w) with PIL's bicubic filter in float ("F" mode: no 8-bit rounding)."""
    channels = [np.asarray(Image.fromarray(c.numpy().astype(np.float32), mode="F").resize((size[1], size[0]),
                                                                                       Image.BICUBIC))
                for c in image]
    return torch.from_numpy(np.stack(channels)).double()


IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("shape", [(64, 48), (20, 37), (97, 61), (32, 32), (512, 384)])
def test_crop_mode_is_pils_bicubic_then_centre_crop(shape):
    images = smooth_images(2, *shape, seed=shape[0])
    ours = clip_preprocess.ClipPreprocess(size=32, crop=(32, 32), **IDENTITY)(images.double())
    h, w = shape
    new = (32, int(32 * w / h)) if h <= w else (int(32 * h / w), 32)  # transformers' shortest-edge rule
    for b in range(2):
        ref = pil_float_resize(images[b], new) if new != shape else images[b].double()
        top, left = (new[0] - 32) // 2, (new[1] - 32) // 2
        torch.testing.assert_close(ours[b], ref[:, top:top + 32, left:left + 32], atol=2e-6, rtol=0)


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (64, 64), (17, 33), (28, 28)])
def test_pad_mode_is_openclip_resize_longest_max(shape):
    images = smooth_images(1, *shape, seed=7)
    ours = clip_preprocess.ClipPreprocess(size=28, crop=None, mode="pad", **IDENTITY)(images.double())[0]
    h, w = shape
    scale = 28 / max(h, w)
    new = (round(h * scale), round(w * scale))
    resized = pil_float_resize(images[0], new) if new != shape else images[0].double()
    ref = torch.zeros(3, 28, 28, dtype=torch.float64)
    top, left = (28 - new[0]) // 2, (28 - new[1]) // 2
    ref[:, top:top + new[0], left:left + new[1]] = resized
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("shape", [(64, 48), (20, 37), (97, 61), (32, 32)])
def test_agrees_with_clip_image_processor(clip_folder, shape):
    """The official path (8-bit PIL image -> CLIPImageProcessor, PIL backend here: there is no torchvision)
    differs from ours only by PIL's rounding to 8 bits between and after its two resize passes."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(clip_folder))
    ours_pre = clip_preprocess.ClipPreprocess.from_folder(clip_folder, 32)
    images = (smooth_images(3, *shape, seed=3) * 255).round() / 255
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in images]
    official = processor(images=pil, return_tensors="pt")["pixel_values"].double()
    ours = ours_pre(images.double())
    assert ours.shape == official.shape == (3, 3, 32, 32)
    std = torch.tensor(clip_preprocess.OPENAI_CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1)
    error_in_levels = ((ours - official) * std * 255).abs()  # in units of one 8-bit level
    if tuple(shape) == (32, 32):
        assert error_in_levels.max() < 1e-3  # no resize: only the normalisation
    else:
        assert error_in_levels.max() <= 1.5
        assert error_in_levels.mean() <= 0.5


def test_preprocessor_config_is_read(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"size": {"shortest_edge": 40}, "crop_size": {"height": 36, "width": 36}, "resample": 2,'
        ' "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')
    pre = clip_preprocess.ClipPreprocess.from_folder(tmp_path, 224)
    assert (pre.size, pre.crop, pre.resample, pre.mean, pre.std) == (40, (36, 36), "bilinear", (0.5,) * 3, (0.25,) * 3)
    assert pre(torch.full((1, 3, 50, 80), 0.75)).shape == (1, 3, 36, 36)
    torch.testing.assert_close(pre(torch.full((1, 3, 50, 80), 0.75)), torch.ones(1, 3, 36, 36))
    assert clip_preprocess.ClipPreprocess.from_folder(tmp_path / "absent", 30) == clip_preprocess.ClipPreprocess(size=30, crop=(30, 30))
    (tmp_path / "preprocessor_config.json").write_text('{"resample": 0}')
    with pytest.raises(UserError, match="resample"):
        clip_preprocess.ClipPreprocess.from_folder(tmp_path, 224)


def test_folder_from_path_or_root(tmp_path, monkeypatch):
    monkeypatch.delenv(loading.ROOT_ENV, raising=False)
    assert loading.reward_folder("hpsv2", str(tmp_path)) == tmp_path
    with pytest.raises(UserError, match=f"set its 'path'.*{loading.ROOT_ENV}"):
        loading.reward_folder("hpsv2", None)
    monkeypatch.setenv(loading.ROOT_ENV, str(tmp_path))
    assert loading.reward_folder("hpsv2", None) == tmp_path / "hpsv2"


NEEDS = (loading.Need("weights", ("model.safetensors", "pytorch_model.bin"), "org/model", "org/model", ("model.safetensors",)),
         loading.Need("tokenizer", ("tokenizer.json", ("vocab.json", "merges.txt")), "org/tok", "org/tok", ("tokenizer.json",)))


def test_missing_files_are_named_with_their_source(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")  # half of the second alternative is not enough
    with pytest.raises(UserError) as err:
        loading.locate("clipscore", tmp_path, NEEDS, allow_download=False)
    message = str(err.value)
    assert "\n" not in message
    for text in ("model.safetensors or pytorch_model.bin", "org/model", "tokenizer.json or vocab.json + merges.txt",
                 "org/tok", "allow_download"):
        assert text in message
    (tmp_path / "merges.txt").write_text("")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert loading.locate("clipscore", tmp_path, NEEDS, allow_download=False) == tmp_path


def test_download_only_when_allowed(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo, name, local_dir):
        calls.append((repo, name))
        (tmp_path / name).write_text("x")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(UserError):
        loading.locate("clipscore", tmp_path, NEEDS, allow_download=False)
    assert calls == []
    assert loading.locate("clipscore", tmp_path, NEEDS, allow_download=True) == tmp_path
    assert calls == [("org/model", "model.safetensors"), ("org/tok", "tokenizer.json")]


def test_download_falls_back_to_the_next_alternative(tmp_path, monkeypatch):
    import huggingface_hub

    def fake_download(repo, name, local_dir):
        if name != "pytorch_model.bin":
            raise FileNotFoundError(f"{name} not in {repo}")
        (tmp_path / name).write_text("x")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    need = loading.Need("weights", clip.CLIP_MODEL_FILES, "org/m", "org/m", (("model.safetensors", "pytorch_model.bin"),))
    assert loading.locate("pickscore", tmp_path, (need,), allow_download=True) == tmp_path
    bad = loading.Need("tokenizer", ("tokenizer.json",), "org/t", "org/t", ("tokenizer.json",))
    with pytest.raises(UserError, match="could not download tokenizer.json from org/t: FileNotFoundError"):
        loading.locate("pickscore", tmp_path, (bad,), allow_download=True)


def test_file_hash_is_sha256(tmp_path):
    import hashlib

    file = tmp_path / "model.safetensors"
    file.write_bytes(b"abc" * 1000)
    assert loading.file_sha256(file) == hashlib.sha256(b"abc" * 1000).hexdigest()
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert loading.weight_files(tmp_path) == [file]  # the file transformers loads, not every copy in the folder
    file.unlink()
    assert loading.weight_files(tmp_path) == [tmp_path / "pytorch_model.bin"]


def test_load_weights_reads_both_formats_and_refuses_pickled_code(tmp_path):
    import pickle

    import torch
    from safetensors.torch import save_file

    from rtdmd.errors import UserError
    from rtdmd.rewards.loading import load_weights

    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(weights, tmp_path / "a.safetensors")
    torch.save({"state_dict": weights}, tmp_path / "b.pt")
    assert torch.equal(load_weights(tmp_path / "a.safetensors")["w"], weights["w"])
    assert torch.equal(load_weights(tmp_path / "b.pt")["state_dict"]["w"], weights["w"])
    # A pickle that would run code when unpickled (here: an object of a class torch does not allow-list).
    (tmp_path / "c.pt").write_bytes(pickle.dumps({"w": _Sneaky()}, protocol=2))
    with pytest.raises(UserError, match="cannot be read as weights only"):
        load_weights(tmp_path / "c.pt")


class _Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))
