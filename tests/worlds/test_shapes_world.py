import numpy as np
import pytest
import torch

from rtdmd import registry
from rtdmd.config.strict import build
from rtdmd.errors import ConfigError, UserError
from rtdmd.worlds.shapes import prompts, render


def _world(**params):
    cfg = build(registry.config_class("world", "shapes"), {"kind": "shapes", **params})
    return registry.builder("world", "shapes")(cfg)


def test_prompt_splits_from_the_shipped_files():
    world = _world()
    train, held_out = world.prompts("train"), world.prompts("eval")
    expected = prompts.split(prompts.grammar())
    assert list(train.texts) == [r["prompt"] for r in expected["train"]]
    assert list(held_out.texts) == [r["prompt"] for r in expected["eval"]]
    assert held_out.metadata[0]["include"] == expected["eval"][0]["include"]
    with pytest.raises(UserError, match="split"):
        world.prompts("test")


def test_config_is_strict():
    with pytest.raises(ConfigError, match="did you mean 'eval_prompts'"):
        _world(eval_prompt="x.jsonl")
    with pytest.raises(ConfigError, match="image_size"):
        _world(image_size=64)


def test_custom_prompt_file_needs_metadata(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("a red circle\n")
    with pytest.raises(UserError, match="metadata"):
        _world(train_prompts=str(plain)).prompts("train")


def test_metrics_on_rendered_images():
    world = _world()
    held_out = world.prompts("eval")
    rng = np.random.default_rng(0)
    repeated = held_out.subset([i for i in range(len(held_out)) for _ in range(2)])
    images = torch.from_numpy(render.render_batch(repeated.metadata, rng))
    metrics = world.metrics(images, repeated)
    assert metrics["accuracy"] == 1.0
    assert {f"accuracy/{t}" for t in prompts.TAGS} <= set(metrics)
    assert 0 < metrics["mean_intensity"] < 1 and 0 < metrics["saturation"] < 1
    assert metrics["color_entropy"] > 0 and metrics["diversity"] > 0
    # The same images judged against the prompts shifted by one: accuracy collapses, statistics do not move.
    shifted = held_out.subset([(i + 1) % len(held_out) for i in range(len(held_out)) for _ in range(2)])
    worse = world.metrics(images, shifted)
    assert worse["accuracy"] < 0.4
    assert worse["mean_intensity"] == metrics["mean_intensity"]


def test_metrics_diversity_is_zero_for_copies():
    world = _world()
    held_out = world.prompts("eval").subset([0, 0, 0])
    image = render.render(held_out.metadata[0], 1)
    metrics = world.metrics(np.stack([image] * 3), held_out)
    assert metrics["diversity"] == 0.0


def test_teacher_location_for_the_backbone():
    world = _world()
    assert (world.teacher_path / "model_index.json").is_file()
    assert world.max_sequence_length == 1 and world.image_size == 32


def test_teacher_guidance_is_the_measured_one():
    import json

    world = _world()
    metrics = json.loads((world.teacher_path.parent / "teacher_metrics.json").read_text())
    assert world.teacher_guidance == metrics["cfg"] > 1
    assert _world(teacher=str(world.teacher_path)).teacher_guidance is None


def test_evaluate_follows_the_worlds_contract():
    from rtdmd.rewards.base import RewardSet, WeightedReward
    from rtdmd.worlds.shapes.rewards import OracleReward

    world = _world()
    held_out = world.prompts("eval")
    rng = np.random.default_rng(1)
    samples = {p: torch.from_numpy(render.render_batch([m] * 3, rng)) for p, m in
               zip(held_out.texts[:4], held_out.metadata[:4])}
    samples[held_out.texts[4]] = samples[held_out.texts[0]]  # images of another prompt: the oracle says no
    rewards = RewardSet([WeightedReward("oracle", OracleReward(), 2.0)])
    result = world.evaluate(samples, rewards, beta=1.0)
    assert [result["prompts"][p]["accuracy"] for p in samples] == [1, 1, 1, 1, 0]
    assert [result["prompts"][p]["oracle"] for p in samples] == [1, 1, 1, 1, 0]
    assert result["summary"]["reward"] == pytest.approx(2 * 12 / 15)
    assert result["summary"]["accuracy"] < 1 and result["prompts"][held_out.texts[1]]["diversity"] > 0
    with pytest.raises(UserError, match="neither prompt file"):
        world.evaluate({"a purple hexagon": samples[held_out.texts[0]]}, rewards, beta=1.0)


def test_training_preflight_finds_the_shipped_teacher(tmp_path):
    """``backbone.path: ""`` in shapes/default means the world's teacher: the preflight checks that folder, and a
    world without a teacher gets a one-line error instead of a check of the empty path."""
    from rtdmd.config import load_config
    from rtdmd.train.preflight import check_distill

    config = load_config("shapes/default", [])
    assert config.backbone.path == ""
    check_distill(config, world_size=1)
    with pytest.raises(UserError, match="model_index.json"):
        check_distill(load_config("shapes/default", [f"world.teacher={tmp_path}"]), world_size=1)
    with pytest.raises(UserError, match="ships no teacher"):
        load_config("shapes/default", []).backbone.preflight(None)
