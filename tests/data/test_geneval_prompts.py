"""GenEval-style training prompts against GenEval's real test set: the templates reproduce every test prompt, 10,000
generated prompts share none of them (by normalised prompt or by requirement), the task mix is Flow-GRPO's, the
metadata is valid GenEval metadata, and a seed fixes the output."""

import json
from collections import Counter

import pytest

from rtdmd.data import benchmarks
from rtdmd.data import geneval_prompts as gp
from rtdmd.data.geneval import RELATIONS, parse_prompt_set
from rtdmd.errors import UserError

FLOW_GRPO_MIX = {"position": 0.7, "color_attr": 0.3, "counting": 0.5, "colors": 0.1, "two_object": 0.1}


@pytest.fixture
def geneval_test(mirror):
    return benchmarks.load("geneval")


def test_templates_reproduce_every_test_prompt(geneval_test):
    assert [gp.render(m) for m in geneval_test.metadata] == list(geneval_test.texts)


def test_ten_thousand_prompts_are_disjoint_from_the_test_set_and_mixed_as_published(geneval_test):
    prompts = gp.training_prompts(10_000, seed=0)
    assert len(prompts) == 10_000
    # Disjoint: as exact strings, after normalisation, and by what they ask for.
    assert not set(prompts.texts) & set(geneval_test.texts)
    assert not {gp.normalise(t) for t in prompts.texts} & {gp.normalise(t) for t in geneval_test.texts}
    asked = {gp.requirement_key(m) for m in prompts.metadata}
    assert not asked & {gp.requirement_key(m) for m in geneval_test.metadata}
    # The mix: each task's share within 2 points of its normalised weight.
    shares = {tag: n / len(prompts) for tag, n in Counter(m["tag"] for m in prompts.metadata).items()}
    total = sum(FLOW_GRPO_MIX.values())
    assert set(shares) == set(FLOW_GRPO_MIX)
    assert all(abs(shares[task] - w / total) < 0.02 for task, w in FLOW_GRPO_MIX.items()), shares
    # Valid GenEval metadata over GenEval's classes and colours, worded by GenEval's templates.
    specs = parse_prompt_set(prompts.metadata, "generated")
    classes = set(gp.read_classes(benchmarks.fetch(benchmarks.FILES[gp.CLASS_FILE])))
    assert len(classes) == 80 and {o.cls for s in specs for o in (*s.include, *s.exclude)} <= classes
    assert {o.color for s in specs for o in s.include} == {None, *gp.COLORS} and len(gp.COLORS) == 10
    assert {o.count for s in specs for o in s.include} == {1, 2, 3, 4}
    assert {o.position[0] for s in specs for o in s.include if o.position} == set(RELATIONS)
    assert all(gp.render(m) == t for t, m in zip(prompts.texts, prompts.metadata))
    two = [s.include for s in specs if s.tag in ("two_object", "position", "color_attr")]
    assert all(a.cls != b.cls for a, b in two)


def test_wording_and_what_counts_as_the_same_prompt():
    assert gp.plural("bench") == "benchs" and gp.plural("bus") == "buses" and gp.plural("skis") == "skises"
    assert gp.article("orange cow") == "an" and gp.article("tv") == "a"
    assert gp.normalise("  A Photo of a\u00a0DOG  right of a cat. ") == "a photo of a dog right of a cat"
    dog_right_of_cat = {"tag": "position", "include": [{"class": "cat", "count": 1},
                                                       {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    cat_left_of_dog = {"tag": "position", "include": [{"class": "dog", "count": 1},
                                                      {"class": "cat", "count": 1, "position": ["left of", 0]}]}
    cat_right_of_dog = {"tag": "position", "include": [{"class": "dog", "count": 1},
                                                       {"class": "cat", "count": 1, "position": ["right of", 0]}]}
    assert gp.requirement_key(dog_right_of_cat) == gp.requirement_key(cat_left_of_dog)
    assert gp.requirement_key(dog_right_of_cat) != gp.requirement_key(cat_right_of_dog)
    a_and_b = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}]}
    b_and_a = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}]}
    assert gp.requirement_key(a_and_b) == gp.requirement_key(b_and_a)
    held_out = gp.HeldOutSet(["a photo of a dog right of a cat"], [dog_right_of_cat])
    assert held_out.holds(gp.render(cat_left_of_dog), cat_left_of_dog)
    assert not held_out.holds(gp.render(cat_right_of_dog), cat_right_of_dog)


def test_task_counts_are_exact_at_any_size():
    for num in (1, 7, 17, 100, 10_001):
        counts = gp.task_counts(FLOW_GRPO_MIX, num)
        assert sum(counts.values()) == num
        assert all(abs(counts[t] - num * w / 1.7) < 1 for t, w in FLOW_GRPO_MIX.items())
    with pytest.raises(UserError, match="unknown GenEval task 'spatial'"):
        gp.task_counts({"spatial": 1.0}, 10)


def test_an_exhausted_task_is_an_error_not_a_hang(geneval_test):
    singles = [m for m in geneval_test.metadata if m["tag"] == "single_object"]
    classes = [m["include"][0]["class"] for m in singles]
    held_out = gp.HeldOutSet(geneval_test.texts, geneval_test.metadata)
    with pytest.raises(UserError, match="'single_object': every prompt drawn is a test prompt"):
        gp.generate(3, 0, classes, held_out, weights={"single_object": 1.0})


def test_generation_is_deterministic_for_a_seed(geneval_test):
    classes = gp.read_classes(benchmarks.fetch(benchmarks.FILES[gp.CLASS_FILE]))
    held_out = gp.HeldOutSet(geneval_test.texts, geneval_test.metadata)
    first = gp.to_jsonl(gp.generate(300, 5, classes, held_out))
    assert gp.to_jsonl(gp.generate(300, 5, classes, held_out)) == first
    assert gp.to_jsonl(gp.generate(300, 6, classes, held_out)) != first
    record = json.loads(first.split("\n")[0])
    assert list(record)[0] == "tag" and list(record)[-1] == "prompt"  # GenEval's field order
