"""Stored-loss regression of both stages on the tiny analytic world, under both presets (tests/regression.py)."""

import pytest

from rtdmd.train import align, distill
from tests import regression
from tests.tiny import tiny_config

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("preset", ["paper", "exact"])
def test_both_stages_log_the_stored_losses(tmp_path, preset):
    config = tiny_config(f"preset={preset}")
    distill.run(config, tmp_path / "s1")
    align.run(config, tmp_path / "s2", tmp_path / "s1")
    regression.check(f"gmm_{preset}_distill", regression.losses(tmp_path / "s1", "distill"))
    regression.check(f"gmm_{preset}_align", regression.losses(tmp_path / "s2", "align"))
