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
