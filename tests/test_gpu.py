"""On a CUDA device only (``pytest -m gpu``; the default run deselects these): both stages of the tiny analytic
world run on the GPU with the same code, and their losses track the CPU run's (the draws are the same
counter-based streams; only the float arithmetic differs)."""

import pytest
import torch

from rtdmd.train import align, distill
from tests import regression
from tests.tiny import tiny_config

pytestmark = pytest.mark.gpu


def test_both_stages_on_cuda_track_the_cpu_run(tmp_path):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device: run them with pytest -m gpu on a GPU"
    for device in ("cpu", "cuda"):
        config = tiny_config(f"run.device={device}")
        distill.run(config, tmp_path / device / "s1")
        align.run(config, tmp_path / device / "s2", tmp_path / device / "s1")
    for stage, folder in (("distill", "s1"), ("align", "s2")):
        cpu, gpu = (regression.losses(tmp_path / d / folder, stage) for d in ("cpu", "cuda"))
        for key in ("fake_loss", "reward/total"):
            if key in cpu:
                torch.testing.assert_close(torch.tensor(gpu[key]), torch.tensor(cpu[key]), rtol=1e-3, atol=1e-4)
