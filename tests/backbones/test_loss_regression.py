"""Stored-loss regression of both stages on a tiny SD3 pipeline with LoRA roles (tests/regression.py)."""

import pytest

from rtdmd.cli import main
from tests import regression
from tests.backbones.image_reward import registered
from tests.backbones.test_stages import write_config

pytestmark = pytest.mark.integration


def test_both_stages_log_the_stored_losses(folders, tmp_path):
    config = write_config(tmp_path, "sd3", folders["sd3"])
    with registered():
        assert main(["distill", str(config), "--out", str(tmp_path / "s1")]) == 0
        assert main(["align", str(config), "--from", str(tmp_path / "s1"), "--out", str(tmp_path / "s2")]) == 0
    regression.check("sd3_distill", regression.losses(tmp_path / "s1", "distill"))
    regression.check("sd3_align", regression.losses(tmp_path / "s2", "align"))
