"""GenEval-style compositional rewards: metadata validation, the relation and judging rules on hand-made
cases, per-tag accuracy, and the reward on drawn images with a pixel oracle."""

import pytest
import torch

from rtdmd.errors import UserError
from rtdmd.rewards import compositional as comp
from tests.rewards import toys

POSITION = {"tag": "position", "include": [{"class": "dog", "count": 1},
                                           {"class": "cat", "count": 1, "position": ["right of", 0]}]}
COUNTING = {"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": 3}]}
COLOR = {"tag": "colors", "include": [{"class": "ball", "count": 1, "color": "green"}]}


def test_parse_valid_metadata():
    spec = comp.parse_spec(POSITION)
    assert spec.tag == "position" and spec.num_requirements == 2
    assert spec.include[1] == comp.ObjectSpec("cat", 1, None, ("right of", 0))
    assert comp.parse_spec(COUNTING).exclude == (comp.ObjectSpec("cat", 3),)


@pytest.mark.parametrize("metadata, message", [
    ({}, "non-empty list 'include'"),
    ({"include": [{"count": 1}]}, "include\\[0\\]: 'class'"),
    ({"include": [{"class": "cat", "count": 0}]}, "positive integer"),
    ({"include": [{"class": "cat", "count": True}]}, "positive integer"),
    ({"include": [{"class": "cat", "colour": "red"}]}, "unknown field 'colour'"),
    ({"include": [{"class": "cat", "position": ["left of", 0]}]}, "earlier include entry"),
    ({"include": [{"class": "a"}, {"class": "cat", "position": ["beside", 0]}]}, "relation in"),
    ({"include": [{"class": "cat"}], "exclude": [{"class": "cat", "position": ["above", 0]}]}, "only allowed in include"),
])
def test_parse_rejects_with_the_field_named(metadata, message):
    with pytest.raises(UserError, match=message):
        comp.parse_spec(metadata, "prompts.jsonl record 3")


def test_relations_by_hand():
    b = (10, 10, 20, 20)
    assert comp.relations((30, 10, 40, 20), b) == {"right of"}
    assert comp.relations((-10, 10, 0, 20), b) == {"left of"}
    assert comp.relations((10, -10, 20, 0), b) == {"above"}
    assert comp.relations((10, 30, 20, 40), b) == {"below"}
    assert comp.relations((30, 30, 40, 40), b) == {"right of", "below"}  # diagonal: 45 degrees, both > 0.5
    # overlapping boxes: centre offset 2 < 0.1 * (10 + 10): no relation at all
    assert comp.relations((12, 10, 22, 20), b) == set()
    # mostly to the right, a little lower: dx ~ 0.99, dy small -> only "right of"
    assert comp.relations((40, 13, 50, 23), b) == {"right of"}


def det(cls, box, score=1.0, color=None):
    return comp.Detection(cls, box, score, color)


def test_judge_geneval_rules():
    position = comp.parse_spec(POSITION)
    dog, cat_right, cat_left = det("dog", (0, 0, 10, 10)), det("cat", (30, 0, 40, 10)), det("cat", (-30, 0, -20, 10))
    assert comp.judge(position, [dog, cat_right]).correct
    wrong = comp.judge(position, [dog, cat_left])
    assert not wrong.correct and wrong.satisfied == 1 and wrong.fraction == 0.5
    no_target = comp.judge(position, [cat_right])
    assert "no target" in " ".join(no_target.reasons) and no_target.satisfied == 0

    counting = comp.parse_spec(COUNTING)
    cats = [det("cat", (i * 20, 0, i * 20 + 10, 10)) for i in range(3)]
    assert comp.judge(counting, cats[:2]).correct
    too_many = comp.judge(counting, cats)
    assert not too_many.correct and too_many.satisfied == 1  # include holds, exclude fails
    assert comp.judge(counting, cats[:1]).satisfied == 1  # exclude holds, include fails

    color = comp.parse_spec(COLOR)
    assert comp.judge(color, [det("ball", (0, 0, 1, 1), color="green")]).correct
    # only the most confident `count` detections are checked: a green ball with a lower score does not help
    assert not comp.judge(color, [det("ball", (0, 0, 1, 1), 0.9, "red"), det("ball", (5, 5, 6, 6), 0.5, "green")]).correct


def test_reward_on_drawn_images_with_pixel_oracle():
    images = torch.stack([
        toys.draw(32, [("dog", 2, 10, 6), ("cat", 20, 10, 6)]),  # cat right of dog: correct
        toys.draw(32, [("cat", 2, 10, 6), ("dog", 20, 10, 6)]),  # cat left of dog
        toys.draw(32, [("cat", 1, 1, 5), ("cat", 10, 10, 5)]),  # two cats
        toys.draw(32, [("cat", 1, 1, 5), ("cat", 10, 10, 5), ("cat", 20, 20, 5)]),  # three cats
    ])
    metadata = [POSITION, POSITION, COUNTING, COUNTING]
    strict = comp.CompositionalReward(toys.SquareOracle(), "strict")
    partial = comp.CompositionalReward(toys.SquareOracle(), "partial")
    prompts = ["a cat right of a dog"] * 2 + ["two cats"] * 2
    torch.testing.assert_close(strict(images, prompts, metadata), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(partial(images, prompts, metadata), torch.tensor([1.0, 0.5, 1.0, 0.5]))
    assert not strict.differentiable and "left of" not in strict.last_verdicts[0].reasons
    with pytest.raises(UserError, match="one metadata record per image"):
        strict(images, prompts, None)


def test_built_from_config_with_a_detector_factory():
    from rtdmd import registry
    from rtdmd.config import strict

    cls = registry.config_class("reward", "compositional")
    cfg = strict.build(cls, {"kind": "compositional", "detector": "tests.rewards.toys:build_oracle",
                                  "score": "partial"}, "rewards[0]")
    reward = registry.builder("reward", "compositional")(cfg, world=None, device="cpu")
    assert reward.info() == {"kind": "compositional", "score": "partial", "detector": {"name": "square-oracle"}}
    with pytest.raises(UserError, match="cannot be imported"):
        comp.build_compositional(cls(detector="no_such_module_xyz:build"))
    with pytest.raises(UserError, match="package.module:function"):
        cls(detector="justaname")
