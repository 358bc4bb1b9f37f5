"""Both training stages on every tiny backbone through the command line: finite losses, adapters that move,
exact resume, and ``rtdmd generate`` / ``rtdmd export`` of the result reproduced by a stock pipeline."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import rtdmd.scheduler
from rtdmd.app.sampling import seeded_generators
from rtdmd.backbones.loading import load_pipeline
from rtdmd.cli import main
from rtdmd.train.checkpoint import checkpoint_digest, latest_checkpoint, load_checkpoint
from tests.backbones.conftest import CPU, FAMILIES, HW
from tests.backbones.image_reward import registered

pytestmark = pytest.mark.integration

TRAIN_PROMPTS = ["a red cube", "a blue ball", "a green tree"]
STAGE_FAMILIES = ["sd3", "sd3_pixel", "flux1_dev", "flux2_klein"]


def write_config(root, family, folder):
    (root / "train.txt").write_text("\n".join(TRAIN_PROMPTS) + "\n")
    (root / "eval.txt").write_text("a yellow star\n")
    _, _, kwargs, _ = FAMILIES[family]
    backbone = {"kind": FAMILIES[family][0].rsplit(".", 1)[1], "path": str(folder), "height": HW, "width": HW,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}
    config = {
        "world": {"kind": "prompts", "train": str(root / "train.txt"), "eval": str(root / "eval.txt")},
        "backbone": backbone,
        "reward": {"kind": "brightness"},
        "distill": {"iterations": 4, "batch_size": 2, "fake_update_ratio": 2, "checkpoint_every": 2, "log_every": 1},
        "align": {"iterations": 2, "prompts_per_iteration": 1, "group_size": 2, "micro_batch": 2,
                  "checkpoint_every": 1, "log_every": 1, "ema_every": 1},
        "run": {"progress": False, "eval_samples": 1},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory):
    """Stage 1 then stage 2 of every family (run once, shared by the tests below)."""
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models (see conftest)
    with registered():
        for family in STAGE_FAMILIES:
            root = tmp_path_factory.mktemp(family)
            config = write_config(root, family, folders[family])
            assert main(["distill", str(config), "--out", str(root / "s1")]) == 0
            assert main(["align", str(config), "--from", str(root / "s1"), "--out", str(root / "s2")]) == 0
            out[family] = (root, config)
    torch.set_num_threads(threads)
    return out


def tensors_of(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))


@pytest.mark.parametrize("family", STAGE_FAMILIES)
def test_both_stages_train_the_adapters(runs, family):
    root, _ = runs[family]
    for stage in ("s1", "s2"):
        records = [json.loads(line) for line in (root / stage / "metrics.jsonl").read_text().splitlines()]
        losses = [v for r in records for k, v in r.items() if k.endswith("loss") and isinstance(v, float)]
        assert losses and all(math.isfinite(v) for v in losses)
        assert any("eval/reward" in r for r in records)  # the prompts world's evaluation ran
    s1, state1 = tensors_of(root / "s1")
    s2, state2 = tensors_of(root / "s2")
    assert state1["step"] == 4 and state2["step"] == 2
    # Adapters moved away from B = 0: stage 1's generator and fake, and stage 2's fresh generator.
    for tensors, role in ((s1, "generator"), (s1, "fake"), (s2, "generator")):
        b = [v for k, v in tensors.items() if k.startswith(role + "/") and "lora_B" in k]
        assert b and max(float(v.abs().max()) for v in b) > 0
    assert all(v.dtype == torch.float32 for k, v in s2.items() if not k.startswith("optim"))
    assert any(k.startswith("stage1_generator/") for k in s2)


def test_resume_is_exact_for_a_diffusers_backbone(runs, tmp_path):
    root, config = runs["sd3"]
    with registered():
        assert main(["distill", str(config), "--out", str(tmp_path / "s1"), "--set", "distill.iterations=2"]) == 0
        assert main(["distill", str(config), "--out", str(tmp_path / "s1"), "--resume"]) == 0
        assert main(["align", str(config), "--from", str(root / "s1"), "--out", str(tmp_path / "s2"),
                     "--set", "align.iterations=1"]) == 0
        assert main(["align", str(config), "--from", str(root / "s1"), "--out", str(tmp_path / "s2"), "--resume"]) == 0
    for stage in ("s1", "s2"):
        full, _ = tensors_of(root / stage)
        split, _ = tensors_of(tmp_path / stage)
        assert full.keys() == split.keys()
        assert all(torch.equal(full[k], split[k]) for k in full), stage


PIPELINES = {"sd3": "StableDiffusion3Pipeline", "flux2_klein": "Flux2KleinPipeline"}


@pytest.mark.parametrize("family", list(PIPELINES))
def test_generate_and_exports_reproduced_by_a_stock_pipeline(runs, folders, family, tmp_path):
    import diffusers

    root, _ = runs[family]
    with registered():
        assert main(["generate", "--run", str(root / "s2"), "--prompt", "a red cube", "--num", "2", "--seed", "7",
                     "--out", str(tmp_path / "images")]) == 0
        assert main(["export", "--run", str(root / "s2"), "--out", str(tmp_path / "lora"), "--format", "lora"]) == 0
        assert main(["export", "--run", str(root / "s2"), "--out", str(tmp_path / "merged")]) == 0
        assert main(["export", "--run", str(root / "s2"), "--out", str(tmp_path / "merged")]) == 2  # not empty
    rows = [json.loads(line) for line in (tmp_path / "images" / "metadata.jsonl").read_text().splitlines()]
    ours = np.stack([np.asarray(Image.open(tmp_path / "images" / r["file"])) for r in rows])
    # Every output names the checkpoint it came from: the metadata, each PNG's text chunk, both exports.
    digest = checkpoint_digest(latest_checkpoint(root / "s2" / "checkpoints"))
    assert all((r["stage"], r["step"], r["checkpoint_sha256"]) == ("align", 2, digest) for r in rows)
    assert json.loads(Image.open(tmp_path / "images" / rows[0]["file"]).text["rtdmd"])["checkpoint_sha256"] == digest
    for export in ("lora", "merged"):
        record = json.loads((tmp_path / export / "rtdmd_export.json").read_text())
        assert record["source"]["checkpoint_sha256"] == digest

    def stock(pipe):
        gens = seeded_generators([r["seed"] for r in rows])
        pipe.scheduler.set_generator(gens)
        images = pipe(prompt=[r["prompt"] for r in rows], height=HW, width=HW, num_inference_steps=4,
                      guidance_scale=1.0, generator=gens, output_type="np", **FAMILIES[family][3]).images
        return (images * 255).round().astype("uint8")

    pipeline = getattr(diffusers, PIPELINES[family])
    with_lora = load_pipeline(pipeline, str(folders[family]), device=CPU, dtype=torch.float32)
    with_lora.load_lora_weights(tmp_path / "lora")
    with_lora.scheduler = rtdmd.scheduler.CPSScheduler.from_pretrained(tmp_path / "lora", subfolder="scheduler")
    merged = load_pipeline(pipeline, str(tmp_path / "merged"), device=CPU, dtype=torch.float32)
    assert ours.shape == (2, HW, HW, 3) and len({im.tobytes() for im in ours}) == 2
    for images in (stock(with_lora), stock(merged)):
        assert images.shape == ours.shape
        assert np.abs(images.astype(int) - ours.astype(int)).max() <= 1  # uint8 rounding at most
