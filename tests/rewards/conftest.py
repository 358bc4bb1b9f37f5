from pathlib import Path

import pytest
import torch

from tests.rewards import tiny_clip


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory) -> Path:
    """A tiny CLIP model in the layout of openai/clip-vit-large-patch14 (input 32 px, crop from shortest edge)."""
    folder = tmp_path_factory.mktemp("clipscore")
    tiny_clip.write_clip_folder(folder, seed=1)
    return folder


@pytest.fixture(scope="session")
def hps_folder(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny HPSv2-format folder: an OpenCLIP state dict under "state_dict" in HPS_v2.1_compressed.pt, plus
    the tokenizer files. Returns the folder and the original state dict."""
    folder = tmp_path_factory.mktemp("hpsv2")
    vocab = tiny_clip.write_tokenizer(folder)
    state = tiny_clip.openclip_state_dict(vocab, seed=2)
    torch.save({"epoch": 1, "state_dict": state}, folder / "HPS_v2.1_compressed.pt")
    return folder, state
