"""Prompt sources: the one-string spelling of a file, a registered set or generated prompts, checked without
touching the network, and loaded through the registry."""

import pytest

from rtdmd.data.sources import PromptSource, parse_source
from rtdmd.errors import ConfigError, UserError


@pytest.mark.parametrize("text, source", [
    ("prompts/train.jsonl", PromptSource("file", "prompts/train.jsonl")),
    ("./benchmark:odd name.txt", PromptSource("file", "./benchmark:odd name.txt")),
    ("benchmark:pickapic_sfw/train", PromptSource("benchmark", "pickapic_sfw/train")),
    ("generated:geneval?num=50000&seed=0", PromptSource("generated", "geneval", 50000, 0)),
    ("generated:geneval?seed=3&num=7", PromptSource("generated", "geneval", 7, 3)),
])
def test_spellings(text, source):
    assert parse_source(text) == source
    assert parse_source(str(source)) == source


@pytest.mark.parametrize("text, message", [
    ("benchmark:drawbnch", "unknown prompt set 'drawbnch' in 'benchmark:drawbnch' \\(did you mean "
                           "'benchmark:drawbench'\\?\\)"),
    ("generated:parti?num=5&seed=0", "unknown prompt generator 'parti'"),
    ("generated:geneval", "needs an integer num and seed: write it as generated:geneval\\?num=N&seed=S"),
    ("generated:geneval?num=five&seed=0", "needs an integer num and seed"),
    ("generated:geneval?num=0&seed=0", "num must be >= 1"),
    ("generated:geneval?num=5&seed=0&mix=x", "the only parameters"),
    ("  ", "must name a file"),
])
def test_malformed_spellings(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_source(text)
    assert "\n" not in str(err.value)


def test_each_kind_loads(mirror, tmp_path):
    assert len(parse_source("benchmark:pickapic_sfw/test").load()) == 1024
    generated = parse_source("generated:geneval?num=20&seed=1").load()
    assert len(generated) == 20 and "include" in generated.metadata[0]
    (tmp_path / "p.txt").write_text("a cat\n")
    assert parse_source(str(tmp_path / "p.txt")).load().texts == ("a cat",)
    with pytest.raises(UserError, match="does not exist"):
        parse_source(str(tmp_path / "missing.txt")).load()
