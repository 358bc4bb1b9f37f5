import json

import pytest
import torch

from rtdmd import registry
from rtdmd.errors import ConfigError
from rtdmd.rewards.base import RewardSet, WeightedReward


class MeanPixel:
    differentiable = True

    def __call__(self, images, prompts, metadata=None):
        assert all(m.get("tag") == "single_object" for m in metadata)
        return images.float().mean((1, 2, 3))


def test_prompt_files_world(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"prompt": p, "tag": "single_object"}) for p in ["a cat", "a dog"]))
    held_out = tmp_path / "eval.txt"
    held_out.write_text("a bird\n\na fish\n")
    cls = registry.config_class("world", "prompts")
    world = registry.builder("world", "prompts")(cls(train=str(train), eval=str(held_out)))
    assert world.prompts("train").texts == ("a cat", "a dog")
    assert world.prompts("train").metadata[1] == {"tag": "single_object"}
    assert world.prompts("eval").texts == ("a bird", "a fish")
    only_train = registry.builder("world", "prompts")(cls(train=str(train)))
    assert only_train.prompts("eval").texts == ("a cat", "a dog")  # no held-out file: the training prompts
    with pytest.raises(ConfigError, match="train"):
        cls()


def test_evaluation_is_the_rewards_per_prompt(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"prompt": p, "tag": "single_object"}) for p in ["a cat", "a dog"]))
    world = registry.builder("world", "prompts")(registry.config_class("world", "prompts")(train=str(train)))
    rewards = RewardSet([WeightedReward("mean", MeanPixel(), weight=2.0)])
    samples = {"a cat": torch.full((3, 3, 4, 4), 0.25), "a dog": torch.full((2, 3, 4, 4), 0.75)}
    result = world.evaluate(samples, rewards, beta=1.0)
    assert result["prompts"]["a cat"] == {"mean": 0.25, "reward": 0.5}
    assert result["summary"] == pytest.approx({"mean": 0.5, "reward": 1.0})


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Registered sets come from the shared folder, into an empty cache."""
    from rtdmd.data import fetch
    from tests.shared_data import shared_dir

    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(fetch.MIRROR_ENV, str(shared_dir() / "datasets"))


def test_prompt_sources_and_the_stage_2_split(tmp_path, mirror):
    cls = registry.config_class("world", "prompts")
    cfg = cls(train="benchmark:pickapic_sfw/test", align_train="generated:geneval?num=30&seed=2",
              eval="benchmark:geneval")
    cfg.preflight()
    world = registry.builder("world", "prompts")(cfg)
    assert len(world.prompts("train")) == 1024 and len(world.prompts("eval")) == 553
    stage2 = world.prompts("align")
    assert len(stage2) == 30 and stage2.metadata[0]["tag"] in ("position", "color_attr", "counting", "colors",
                                                               "two_object")
    assert world.prompts("align") is stage2  # loaded once
    only_train = registry.builder("world", "prompts")(cls(train="benchmark:pickapic_sfw/test"))
    assert only_train.prompts("align") is only_train.prompts("train")  # no align_train: stage 1's prompts


@pytest.mark.parametrize("key, value, message", [
    ("train", "benchmark:pickapic", "world.train: unknown prompt set 'pickapic'"),
    ("align_train", "generated:geneval?num=0&seed=0", "world.align_train: 'generated:geneval\\?num=0&seed=0': num"),
    ("eval", "generated:geneval", "world.eval: 'generated:geneval' needs an integer num and seed"),
])
def test_a_malformed_source_fails_at_config_load(key, value, message):
    from rtdmd.config import strict

    data = {"kind": "prompts", "train": "benchmark:geneval", key: value}
    with pytest.raises(ConfigError, match=message):
        strict.build(registry.config_class("world", "prompts"), data, "world")


def test_preflight_offline_is_one_line(tmp_path, monkeypatch):
    from rtdmd.data import fetch
    from rtdmd.errors import UserError

    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.setenv(fetch.URL_ENV, "http://127.0.0.1:9")
    cfg = registry.config_class("world", "prompts")(train="benchmark:drawbench")
    with pytest.raises(UserError, match="cannot download drawbench/test.txt .*RTDMD_DATA_MIRROR") as err:
        cfg.preflight()
    assert "\n" not in str(err.value) and not (tmp_path / "cache").exists()
