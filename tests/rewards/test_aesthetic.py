"""The LAION aesthetic MLP on normalised CLIP image embeddings, against a hand-written affine chain."""

import pytest
import torch

from rtdmd.errors import UserError
from rtdmd.rewards.aesthetic import MLP_STEM, AestheticConfig, build_aesthetic, mlp_from_state_dict
from tests.rewards.test_clip import smooth_images

TINY = {"architecture": "config"}  # the tiny CLIP and MLP of these tests are not the published models


def mlp_state(dims=(24, 16, 8, 4, 1), seed=0):
    """Linear layers at the published indices 0, 2, 4, 6 (dropouts in between hold no weights) and 7."""
    g = torch.Generator().manual_seed(seed)
    indices = [0, 2, 4, 6, 7][:len(dims) - 1]
    state = {}
    for i, (d_in, d_out) in zip(indices, zip(dims[:-1], dims[1:])):
        state[f"layers.{i}.weight"] = torch.randn(d_out, d_in, generator=g) / d_in ** 0.5
        state[f"layers.{i}.bias"] = torch.randn(d_out, generator=g)
    return state


def affine_chain(state, x):
    for i in sorted({int(k.split(".")[1]) for k in state}):
        x = x @ state[f"layers.{i}.weight"].double().T + state[f"layers.{i}.bias"].double()
    return x.squeeze(-1)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_aesthetic_is_mlp_of_normalised_clip_embedding(tmp_path, clip_folder, suffix):
    state = mlp_state()
    if suffix == ".pth":
        torch.save(state, tmp_path / f"{MLP_STEM}.pth")
    else:
        from safetensors.torch import save_file

        save_file(state, str(tmp_path / f"{MLP_STEM}.safetensors"))
    reward = build_aesthetic(AestheticConfig(path=str(tmp_path), clip_path=str(clip_folder), **TINY))
    images = (smooth_images(2, 32, 32, seed=11) * 255).round() / 255
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(str(clip_folder)).eval()
    pixels = CLIPImageProcessor.from_pretrained(str(clip_folder))(
        images=list((images * 255).round().byte().permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embedding = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output).double()
        ours = reward(images, ["ignored", "ignored"])
    expected = affine_chain(state, embedding / embedding.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=0)
    assert reward.differentiable and set(reward.info()["weights_sha256"]) >= {f"{MLP_STEM}{suffix}"}


def test_mlp_file_is_checked(tmp_path, clip_folder):
    with pytest.raises(UserError, match="unexpected key"):
        mlp_from_state_dict({"head.weight": torch.zeros(1, 4)})
    with pytest.raises(UserError, match="takes 5 inputs"):
        mlp_from_state_dict({"layers.0.weight": torch.zeros(4, 3), "layers.0.bias": torch.zeros(4),
                             "layers.2.weight": torch.zeros(1, 5), "layers.2.bias": torch.zeros(1)})
    torch.save(mlp_state(dims=(768, 16, 1)), tmp_path / f"{MLP_STEM}.pth")
    with pytest.raises(UserError, match="768-d embeddings"):
        build_aesthetic(AestheticConfig(path=str(tmp_path), clip_path=str(clip_folder), **TINY))


def test_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("RTDMD_REWARDS_ROOT", raising=False)
    with pytest.raises(UserError, match="improved-aesthetic-predictor"):
        build_aesthetic(AestheticConfig(path=str(tmp_path)))
    torch.save(mlp_state(), tmp_path / f"{MLP_STEM}.pth")
    with pytest.raises(UserError, match="clip_path"):
        build_aesthetic(AestheticConfig(path=str(tmp_path)))


def test_shares_the_clip_model_with_clipscore(tmp_path, clip_folder):
    from rtdmd.rewards.clipscore import ClipScoreConfig, build_clipscore

    torch.save(mlp_state(), tmp_path / f"{MLP_STEM}.pth")
    aesthetic = build_aesthetic(AestheticConfig(path=str(tmp_path), clip_path=str(clip_folder), **TINY))
    clipscore = build_clipscore(ClipScoreConfig(path=str(clip_folder), **TINY))
    assert aesthetic.embedder.model is clipscore.embedder.model
    assert build_clipscore(ClipScoreConfig(path=str(clip_folder), dtype="bf16", **TINY)).embedder.model is not clipscore.embedder.model
