import json
from collections import Counter
from pathlib import Path

from rtdmd.data.prompts import load_prompts
from rtdmd.worlds.shapes import ASSETS, prompts


def test_grammar_sizes_by_hand():
    counts = Counter(r["tag"] for r in prompts.grammar())
    # 3 shapes, 3 colours, counts 1-4, 4 relations; ordered pairs of distinct shapes (6) and colours (6).
    assert counts == {"single_object": 3, "colors": 9, "counting": 12, "two_object": 6,
                      "color_attr": 36, "position": 24}
    texts = [r["prompt"] for r in prompts.grammar()]
    assert len(set(texts)) == len(texts)


def test_metadata_examples():
    by_text = {r["prompt"]: r for r in prompts.grammar()}
    assert by_text["three squares"]["include"] == [{"class": "square", "count": 3}]
    assert by_text["a red circle and a blue square"]["include"] == [
        {"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "blue"}]
    assert by_text["a circle left of a square"]["include"] == [
        {"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]


def test_splits_are_disjoint_deterministic_and_stratified():
    records = prompts.grammar()
    first, second = prompts.split(records), prompts.split(records)
    assert first == second
    train = {r["prompt"] for r in first["train"]}
    held_out = {r["prompt"] for r in first["eval"]}
    assert not train & held_out
    assert train | held_out == {r["prompt"] for r in records}
    for tag, n in Counter(r["tag"] for r in records).items():
        n_eval = sum(r["tag"] == tag for r in first["eval"])
        assert n_eval == -(-n // 3) and n - n_eval >= 1
    assert prompts.split(records, seed=6) != first


def test_shipped_jsonl_files_are_the_split():
    expected = prompts.split(prompts.grammar())
    for name in ("train", "eval"):
        file = ASSETS / f"{name}.jsonl"
        rows = [json.loads(line) for line in Path(file).read_text().splitlines()]
        assert rows == expected[name]
        loaded = load_prompts(file)
        assert list(loaded.texts) == [r["prompt"] for r in expected[name]]
        assert loaded.metadata[0]["tag"] == expected[name][0]["tag"]


def test_sample_records_is_tag_uniform():
    import numpy as np

    draws = prompts.sample_records(np.random.default_rng(0), 6000)
    counts = Counter(r["tag"] for r in draws)
    assert all(abs(c / 6000 - 1 / 6) < 0.02 for c in counts.values())
