"""The shipped recipes: each starts with its launch command, parses strictly with ``load_config``, and holds the
spec's numbers for its setup."""

from pathlib import Path

import pytest
import yaml

from rtdmd import config

RECIPES = sorted((Path(config.__file__).parents[1] / "configs" / "recipes").glob("*.yaml"))


def test_the_five_published_setups_are_shipped():
    assert [p.stem for p in RECIPES] == ["flux1_dev", "flux2_klein_4b", "flux2_klein_9b", "sd35m", "sd3m"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_with_the_published_numbers(path):
    text = path.read_text()
    assert text.startswith("# RTDMD recipe") and "torchrun" in text.split("\n\n")[0]
    assert set(yaml.safe_load(text)) == {"world", "backbone", "rewards", "preset", "distill", "align", "run"}
    cfg = config.load_config(f"recipes/{path.stem}")  # the shipped name, as the launch command uses it
    assert [r.name for r in cfg.rewards] == ["clipscore", "hpsv2", "pickscore", "geneval"]
    assert [r.params.kind for r in cfg.rewards] == ["clipscore", "hpsv2", "pickscore", "remote"]
    assert cfg.rewards[2].bp_scale == pytest.approx(1 / 26, rel=1e-5) and all(r.weight == 1 for r in cfg.rewards)
    distill, align = cfg.distill, cfg.align
    # Spec 4.7 / 5.8 numbers that differ between setups.
    flux2 = path.stem.startswith("flux2")
    assert distill.generator.lr == distill.fake.lr == (1e-6 if flux2 else 3e-5)
    assert align.generator.lr == 3e-6 and align.generator.weight_decay == 1e-4
    assert align.fake.lr == (3e-5 if path.stem.startswith("sd3") else 1e-6)
    assert align.group_size == (16 if path.stem == "sd3m" else 24)
    # Samples per optimiser step (spec 5.8): GPUs x per-GPU batch x 16 sampling rounds.
    published = {"sd3m": 16 * 2, "sd35m": 8 * 9, "flux1_dev": 32 * 3, "flux2_klein_4b": 16 * 6, "flux2_klein_9b": 32 * 3}
    assert align.samples_per_iteration * align.sampling_rounds == published[path.stem] * 16
    assert align.fake_consistency_gamma == (0.0 if path.stem in ("flux1_dev", "flux2_klein_9b") else 0.01)
    assert cfg.backbone.teacher_guidance == {"sd3m": 7.0, "sd35m": 4.5, "flux1_dev": 3.5}.get(path.stem, 4.0)
    side = 1024 if path.stem == "sd3m" else 512
    assert (cfg.backbone.height, cfg.backbone.rank, cfg.backbone.alpha) == (side, 32, 64)
    assert cfg.run.dtype == "bf16" and distill.batch_size == 72 and distill.iterations == 15000
    assert distill.eta == align.eta == 0.9 and cfg.preset == "paper" and align.log_prob == "simplified"
    # Prompts (spec 5.8 and issue 16): Pick-a-Pic for stage 1, generated GenEval-style prompts for stage 2,
    # GenEval's test set held out.
    assert (cfg.world.train, cfg.world.align_train, cfg.world.eval) == (
        "benchmark:pickapic_sfw/train", "generated:geneval?num=50000&seed=0", "benchmark:geneval")


def test_recipe_prompt_sets_pass_preflight(tmp_path, monkeypatch):
    """The recipes' world, checked as a launch checks it before any model loads: every set fetched (through the
    mirror of the shared folder), verified, parsed or generated."""
    from rtdmd import registry
    from rtdmd.data import fetch
    from tests.shared_data import shared_dir

    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(fetch.MIRROR_ENV, str(shared_dir() / "datasets"))
    cfg = config.load_config("recipes/sd3m")
    cfg.world.preflight(cfg)
    world = registry.builder("world", "prompts")(cfg.world)
    assert [len(world.prompts(s)) for s in ("train", "align", "eval")] == [15471, 50000, 553]
