"""A model folder whose weights are damaged: one line, not a diffusers traceback (missing weight files are
caught before loading, see tests/integration/test_bad_input.py)."""

import shutil

import pytest

from rtdmd.errors import UserError
from tests.backbones.conftest import build


def test_damaged_weights_are_one_line(folders, tmp_path):
    folder = tmp_path / "sd3"
    shutil.copytree(folders["sd3"], folder)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match=r"cannot load the model in .*sd3: .*download or copy the folder again") as err:
        build("sd3", folder)
    assert "\n" not in str(err.value)
