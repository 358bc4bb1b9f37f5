"""Loading and validation: every user mistake is a one-line error that says what to do."""

import json
import shutil

import pytest
import torch

from rtdmd import registry
from rtdmd.backbones.flux1 import Flux1Config
from rtdmd.backbones.loading import resolve_folder
from rtdmd.backbones.sd3 import SD3Config
from rtdmd.errors import ConfigError, UserError
from tests.backbones.conftest import build


def test_unreachable_hub_id_says_how_to_use_a_local_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests either way
    with pytest.raises(UserError) as err:
        resolve_folder("nobody-here/no-such-model")
    message = str(err.value)
    assert "\n" not in message and "not reachable" in message and "backbone.path" in message
    with pytest.raises(UserError, match="neither a local folder nor a hub id"):
        resolve_folder("/no/such/folder")


def test_folder_checks(tmp_path, folders):
    with pytest.raises(UserError, match="model_index.json"):
        resolve_folder(str(tmp_path))
    with pytest.raises(UserError, match="FluxPipeline"):
        build("flux1_dev", folders["sd3"])  # a folder of the wrong family
    index = json.loads((folders["sd3_pixel"] / "model_index.json").read_text())
    assert index["vae"] == [None, None]  # the pixel-space folder loads (vae passed as None)


def test_config_validation():
    with pytest.raises(ConfigError, match="multiples of 16"):
        Flux1Config(height=500)
    with pytest.raises(ConfigError, match="teacher_guidance"):
        SD3Config(teacher_guidance=0.5)
    with pytest.raises(ConfigError, match="max_sequence_length"):
        SD3Config(max_sequence_length=1024)
    assert registry.config_class("backbone", "flux2_klein")().hidden_layers == (9, 18, 27)


def test_model_dependent_combinations(folders):
    with pytest.raises(UserError, match="guidance_embeds"):
        build("flux1_cfg", folders["flux1_cfg"], guidance_mode="embedded")
    with pytest.raises(UserError, match="guidance input"):
        build("flux1_dev", folders["flux1_dev"], guidance_mode="cfg")
    with pytest.raises(UserError, match="step-distilled"):
        build("flux2_klein", folders["flux2_klein_distilled"])  # teacher_guidance 4 on a distilled klein
    with pytest.raises(UserError, match="hidden_layers"):
        build("flux2_klein", folders["flux2_klein"], hidden_layers=(1, 9))
    with pytest.raises(UserError, match="target_modules"):
        build("sd3", folders["sd3"], target_modules=("no_such_layer",))


def test_sample_shapes_and_generator_levels(folders):
    from rtdmd.backbones.base import Backbone

    sd3 = build("sd3", folders["sd3"])
    assert isinstance(sd3, Backbone) and sd3.device == torch.device("cpu")
    assert sd3.sample_shape == (4, 8, 8)  # 16 px through a /2 VAE
    torch.testing.assert_close(sd3.generator_sigmas((1000, 750, 500, 250)), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    assert build("sd3_pixel", folders["sd3_pixel"]).sample_shape == (3, 16, 16)
    flux = build("flux1_dev", folders["flux1_dev"])
    assert flux.sample_shape == (16, 16)  # (8/2)^2 tokens of 4 x 4 channels
    # Dynamic shift at 16 tokens: mu = 0.5 + 0.65 (16 - 256) / 3840.
    from rtdmd.functional.schedules import generator_sigmas

    mu = 0.5 + (1.15 - 0.5) * (16 - 256) / (4096 - 256)
    torch.testing.assert_close(flux.generator_sigmas((1000, 750, 500, 250)),
                               generator_sigmas((1000, 750, 500, 250), mu=mu))


def test_damaged_weights_are_one_line(folders, tmp_path):
    folder = tmp_path / "sd3"
    shutil.copytree(folders["sd3"], folder)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match=r"cannot load the model in .*sd3: .*download or copy the folder again") as err:
        build("sd3", folder)
    assert "\n" not in str(err.value)
