"""``rtdmd export`` is a thin wrapper: a run (via ``rtdmd.train.runs.load_run``) in, a diffusers folder out."""

import types

import torch

from rtdmd import cli
from rtdmd.config import DistillConfig
from tests.backbones import tiny_pipelines as tiny
from tests.commands import fake_run


def test_export_command_writes_a_loadable_folder(tmp_path, monkeypatch):
    from rtdmd.backbones import sd3

    folder = tiny.sd3_pipeline(tmp_path / "sd3")
    backbone = sd3.build(sd3.SD3Config(path=str(folder), height=16, width=16, max_sequence_length=8),
                         device=torch.device("cpu"), dtype=torch.float32)
    fake_run.install(monkeypatch, types.SimpleNamespace(distill=DistillConfig(eta=0.7)), backbone)
    assert cli.main(["export", "--run", "RUN", "--out", str(tmp_path / "merged")]) == 0
    assert cli.main(["export", "--run", "RUN", "--out", str(tmp_path / "lora"), "--format", "lora"]) == 0
    from rtdmd.scheduler import CPSScheduler

    assert CPSScheduler.from_pretrained(tmp_path / "merged" / "scheduler").config.eta == 0.7
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    # A second export into the same folder is a one-line user error (exit code 2).
    assert cli.main(["export", "--run", "RUN", "--out", str(tmp_path / "merged")]) == 2
