"""The shipped recipes: each starts with its launch command and every section builds strictly.

The reward kinds (clipscore, hpsv2, pickscore, and remote for GenEval) come with the rewards issue; until they are
registered, the rewards section is checked for the published set only, and the other sections are built one by
one."""

from pathlib import Path

import pytest
import yaml

from rtdmd import config, configtools, registry

RECIPES = sorted((Path(config.__file__).parent / "configs" / "recipes").glob("*.yaml"))


def test_the_five_published_setups_are_shipped():
    assert [p.stem for p in RECIPES] == ["flux1_dev", "flux2_klein_4b", "flux2_klein_9b", "sd35m", "sd3m"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_sections_build(path):
    text = path.read_text()
    assert text.startswith("# RTDMD recipe") and "torchrun" in text.split("\n\n")[0]
    raw = yaml.safe_load(text)
    assert set(raw) == {"world", "backbone", "rewards", "preset", "distill", "align", "run"}
    for section in ("world", "backbone"):
        cls = registry.config_class(section, raw[section]["kind"])
        configtools.build(cls, raw[section], section, config._resolver)
    distill = configtools.build(config.DistillConfig, raw["distill"], "distill")
    align = configtools.build(config.AlignConfig, raw["align"], "align")
    run = configtools.build(config.RunConfig, raw["run"], "run")
    assert [r.get("name", r["kind"]) for r in raw["rewards"]] == ["clipscore", "hpsv2", "pickscore", "geneval"]
    assert raw["rewards"][2]["bp_scale"] == pytest.approx(1 / 26, rel=1e-5)
    # Spec 4.7 / 5.8 numbers that differ between setups.
    flux2 = path.stem.startswith("flux2")
    assert distill.generator.lr == distill.fake.lr == (1e-6 if flux2 else 3e-5)
    assert align.generator.lr == 3e-6 and align.generator.weight_decay == 1e-4
    assert align.group_size == (16 if path.stem == "sd3m" else 24)
    assert align.fake_consistency_gamma == (0.0 if path.stem in ("flux1_dev", "flux2_klein_9b") else 0.01)
    assert run.dtype == "bf16" and distill.batch_size == 72 and distill.iterations == 15000
