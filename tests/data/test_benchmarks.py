"""Converters of the public prompt sets to rtdmd's JSONL format, on small files in the published layouts."""

import json

import pytest

from rtdmd.data import benchmarks
from rtdmd.data.prompts import load_prompts
from rtdmd.errors import UserError


def test_drawbench_csv(tmp_path):
    src = tmp_path / "drawbench.csv"
    src.write_text('Prompts,Category\nA red colored car.,Colors\n"A stack of 3 plates, blue on top.",DALL-E\n'
                   'One car on the street.,Counting\n', encoding="utf-8")
    assert benchmarks.drawbench_to_jsonl(src, tmp_path / "drawbench.jsonl") == 3
    prompts = load_prompts(tmp_path / "drawbench.jsonl")
    assert prompts.texts[1] == "A stack of 3 plates, blue on top."
    assert [m["tag"] for m in prompts.metadata] == ["Colors", "DALL-E", "Counting"]
    (tmp_path / "bad.csv").write_text("text,label\na,b\n")
    with pytest.raises(UserError, match="'Prompts' and 'Category'"):
        benchmarks.drawbench_to_jsonl(tmp_path / "bad.csv", tmp_path / "x.jsonl")


def test_hpsv2_benchmark(tmp_path):
    for i, style in enumerate(benchmarks.HPSV2_STYLES):
        (tmp_path / f"{style}.json").write_text(json.dumps([f"{style} prompt {j}" for j in range(i + 1)]))
    assert benchmarks.hpsv2_to_jsonl(tmp_path, tmp_path / "out" / "hpsv2.jsonl") == 1 + 2 + 3 + 4
    prompts = load_prompts(tmp_path / "out" / "hpsv2.jsonl")
    assert prompts.texts[0] == "anime prompt 0" and prompts.metadata[-1] == {"tag": "photo"}
    (tmp_path / "photo.json").unlink()
    with pytest.raises(UserError, match="zhwang/HPDv2"):
        benchmarks.hpsv2_to_jsonl(tmp_path, tmp_path / "x.jsonl")


def test_geneval_metadata_is_validated(tmp_path):
    good = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
            "prompt": "a photo of two clocks"}
    file = tmp_path / "evaluation_metadata.jsonl"
    file.write_text(json.dumps(good) + "\n" + json.dumps({**good, "include": []}) + "\n")
    with pytest.raises(UserError, match="record 2: needs a non-empty list 'include'"):
        benchmarks.check_geneval(file)
    file.write_text(json.dumps(good) + "\n")
    assert benchmarks.check_geneval(file).texts == ("a photo of two clocks",)
