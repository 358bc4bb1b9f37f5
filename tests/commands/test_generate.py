"""``rtdmd generate``: PNG files + metadata.jsonl; the exported LoRA in a stock pipeline gives the same images."""

import json
import types

import numpy as np
import torch
from PIL import Image

import rtdmd.scheduler
from rtdmd import cli, export
from rtdmd.config import DistillConfig
from rtdmd.sample import seeded_generators
from tests.backbones import tiny_pipelines as tiny
from tests.backbones.conftest import perturb, stock_pipeline
from tests.commands import fake_run

PROMPTS = ["a red cube", "a blue ball"]


def test_generate_writes_pngs_that_a_stock_pipeline_reproduces(tmp_path, monkeypatch):
    from rtdmd.backbones import flux1

    folder = tiny.flux1_pipeline(tmp_path / "flux")
    backbone = flux1.build(flux1.Flux1Config(path=str(folder), height=16, width=16, max_sequence_length=8),
                           device=torch.device("cpu"), dtype=torch.float32)
    perturb(backbone, "generator", 0.3, seed=4)
    fake_run.install(monkeypatch, types.SimpleNamespace(distill=DistillConfig(eta=0.9)), backbone)
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "images"
    argv = ["generate", "--run", "RUN", "--out", str(out), "--prompts", str(prompt_file), "--seed", "10",
            "--per-prompt", "2", "--batch-size", "3"]
    assert cli.main(argv) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"], r["steps"], r["eta"]) for r in rows] == [
        (PROMPTS[0], 10, 4, 0.9), (PROMPTS[0], 11, 4, 0.9), (PROMPTS[1], 12, 4, 0.9), (PROMPTS[1], 13, 4, 0.9)]
    ours = np.stack([np.asarray(Image.open(out / r["file"])) for r in rows])
    # The same images from a stock FluxPipeline with the exported LoRA and the CPS scheduler.
    lora = export.export_lora(backbone, tmp_path / "lora", eta=0.9)
    pipe = stock_pipeline(backbone)
    pipe.load_lora_weights(lora)
    pipe.scheduler = rtdmd.scheduler.CPSScheduler.from_pretrained(lora, subfolder="scheduler")
    gens = seeded_generators([r["seed"] for r in rows])
    pipe.scheduler.set_generator(gens)
    stock = pipe(prompt=[r["prompt"] for r in rows], height=16, width=16, num_inference_steps=4, guidance_scale=1.0,
                 max_sequence_length=8, generator=gens, output_type="np").images
    stock = (stock * 255).round().astype("uint8")
    assert ours.shape == stock.shape == (4, 16, 16, 3)
    assert np.abs(ours.astype(int) - stock.astype(int)).max() <= 1  # rounding at a .5 boundary at most
    assert len({im.tobytes() for im in ours}) == 4  # different seeds, different images


def test_teacher_generation_and_bad_arguments(tmp_path, monkeypatch):
    from rtdmd.backbones import sd3

    folder = tiny.sd3_pipeline(tmp_path / "sd3", pixel_space=True, with_t5=False)
    backbone = sd3.build(sd3.SD3Config(path=str(folder), height=16, width=16, max_sequence_length=8,
                                       teacher_guidance=3.0), device=torch.device("cpu"), dtype=torch.float32)
    fake_run.install(monkeypatch, types.SimpleNamespace(distill=DistillConfig()), backbone)
    out = tmp_path / "teacher"
    assert cli.main(["generate", "--run", "RUN", "--out", str(out), "--prompt", "a cat", "--teacher",
                     "--steps", "3"]) == 0
    row = json.loads((out / "metadata.jsonl").read_text())
    assert row["steps"] == 3 and row["eta"] == 0.0 and row["role"] == "teacher"
    assert np.asarray(Image.open(out / row["file"])).shape == (16, 16, 3)
    assert cli.main(["generate", "--run", "RUN", "--out", str(out), "--prompt", "a", "--per-prompt", "0"]) == 2
