"""The converter of the HPSv2 benchmark (not in the registry) to rtdmd's JSONL format, on small files in the
published layout."""

import json

import pytest

from rtdmd.data import convert
from rtdmd.data.prompts import load_prompts
from rtdmd.errors import UserError


def test_hpsv2_benchmark(tmp_path):
    for i, style in enumerate(convert.HPSV2_STYLES):
        (tmp_path / f"{style}.json").write_text(json.dumps([f"{style} prompt {j}" for j in range(i + 1)]))
    assert convert.hpsv2_to_jsonl(tmp_path, tmp_path / "out" / "hpsv2.jsonl") == 1 + 2 + 3 + 4
    prompts = load_prompts(tmp_path / "out" / "hpsv2.jsonl")
    assert prompts.texts[0] == "anime prompt 0" and prompts.metadata[-1] == {"tag": "photo"}
    (tmp_path / "photo.json").unlink()
    with pytest.raises(UserError, match="zhwang/HPDv2"):
        convert.hpsv2_to_jsonl(tmp_path, tmp_path / "x.jsonl")
