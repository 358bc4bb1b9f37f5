import json

import pytest

from rtdmd import registry
from rtdmd.errors import ConfigError, UserError


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
    with pytest.raises(UserError, match="world.eval"):
        registry.builder("world", "prompts")(cls(train=str(train))).prompts("eval")
    with pytest.raises(ConfigError, match="train"):
        cls()
