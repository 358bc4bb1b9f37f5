"""The benchmark registry against the real files: every set in the shared folder is fetched through the mirror
setting, hash-checked and parsed to its documented count, and the registry's hashes are the ones the shared
folder's README publishes (an independent list, so that the registry was not written to fit)."""

import hashlib
import json

import pytest

from rtdmd.data import benchmarks, fetch
from rtdmd.data.geneval import parse_prompt_set
from rtdmd.errors import UserError
from tests.shared_data import published_sha256

# The documented counts (docs/rewards.md, "Prompt sets"), written out here rather than read from the registry.
COUNTS = {"geneval": 553, "drawbench": 200, "hpsv3": 1024, "geneval2": 800, "ocr": 1018, "partiprompts": 1632,
          **{f"t2i_compbench/{c}": 300 for c in ("color", "shape", "texture", "spatial", "3d_spatial",
                                                 "non_spatial", "numeracy", "complex")},
          "pickapic_sfw/train": 15471, "pickapic_sfw/test": 1024}
PAPER_METRICS = {"drawbench": {"clipscore", "aesthetic", "pickscore", "hpsv2", "imagereward"},
                 "geneval": {"geneval"}, "hpsv3": {"hpsv3"}, "ocr": {"ocr"}, "geneval2": {"geneval2"}}


def test_registry_hashes_are_the_published_ones(datasets):
    published = {path.removeprefix("datasets/"): digest for path, digest in published_sha256().items()
                 if path.startswith("datasets/")}
    assert set(benchmarks.FILES) == set(published)  # every shared data file is registered, nothing else
    for local, file in benchmarks.FILES.items():
        assert file.sha256 == published[local], local
        assert file.size == (datasets / local).stat().st_size, local
        assert file.url == f"https://raw.githubusercontent.com/{file.repo}/{file.commit}/{file.path}"
        assert len(file.commit) == 40


def test_names_counts_and_metrics():
    assert {name: b.count for name, b in benchmarks.BENCHMARKS.items()} == COUNTS
    assert {name: set(b.metrics) for name, b in benchmarks.BENCHMARKS.items() if b.use == "paper"} == PAPER_METRICS
    assert all(not b.metrics for b in benchmarks.BENCHMARKS.values() if b.use != "paper")
    assert {m for b in benchmarks.BENCHMARKS.values() for m in b.metrics} <= set(benchmarks.METRICS)
    assert [b.name for b in benchmarks.expand(["t2i_compbench", "geneval", "t2i_compbench/color"])] == [
        *(f"t2i_compbench/{c}" for c in benchmarks.COMPBENCH_CATEGORIES), "geneval"]
    with pytest.raises(UserError, match="did you mean 'drawbench'"):
        benchmarks.get("drawbenc")


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_set_is_fetched_verified_and_parsed(name, mirror, cache, monkeypatch):
    bench = benchmarks.get(name)
    prompts = bench.load()
    assert len(prompts) == COUNTS[name] and all(t and t == t.strip() for t in prompts.texts)
    cached = cache / "data" / bench.file.local
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == bench.file.sha256
    # Afterwards the cache alone serves it: no mirror, and the download host refuses connections.
    monkeypatch.delenv(fetch.MIRROR_ENV)
    assert bench.load() == prompts


def test_metadata_of_each_parser(mirror):
    geneval = benchmarks.load("geneval")
    assert geneval.texts[0] == "a photo of a bench"
    assert len(parse_prompt_set(geneval.metadata)) == 553
    assert {m["tag"] for m in geneval.metadata} == {"single_object", "two_object", "counting", "colors",
                                                     "position", "color_attr"}
    drawbench = benchmarks.get("drawbench")
    assert len(set(drawbench.load().texts)) == 200 and drawbench.samples_per_prompt == 5
    ocr = benchmarks.load("ocr")
    assert all(f'"{m["text"]}"' in t for t, m in zip(ocr.texts, ocr.metadata))
    assert ocr.metadata[0] == {"text": "Spring Collection 2024"}
    parti = benchmarks.load("partiprompts")
    assert len({m["tag"] for m in parti.metadata}) == 12 and parti.metadata[0]["challenge"] == "Basic"
    # A prompt that opens with a double quote stays whole (a CSV reader would take the quote for quoting).
    assert any(t.startswith('"G I G G L E" painted') and t.endswith("white paint.") for t in parti.texts)
    assert benchmarks.load("t2i_compbench/numeracy").metadata[0] == {"tag": "numeracy"}
    geneval2 = benchmarks.load("geneval2").metadata[0]
    assert set(geneval2) == {"atom_count", "vqa_list", "skills"}
    assert len(geneval2["vqa_list"]) == len(geneval2["skills"])
    assert benchmarks.load("pickapic_sfw/test").metadata[0] == {}


def test_parsers_reject_malformed_files(tmp_path):
    bad = tmp_path / "drawbench.txt"
    bad.write_text("a\na\nb\n")
    with pytest.raises(UserError, match="'b' appears 1 times, expected every prompt 2 times"):
        benchmarks.repeated_lines(2)(bad)
    bad.write_text('no quotes here\n')
    with pytest.raises(UserError, match="prompt 1: no double-quoted target text"):
        benchmarks.ocr_lines(bad)
    bad.write_text("Prompt\tCategory\tChallenge\tNote\na cat\tAnimals\tBasic\n")
    with pytest.raises(UserError, match="line 2: expected 4 tab-separated columns"):
        benchmarks.parti_tsv(bad)
    jsonl = tmp_path / "geneval2.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a cat", "vqa_list": [["Is there a cat?", "Yes"]], "skills": []}) + "\n")
    with pytest.raises(UserError, match="record 1: needs 'vqa_list'"):
        benchmarks.geneval2_jsonl(jsonl)
    jsonl.write_text(json.dumps({"prompt": "a cat", "tag": "single_object", "include": []}) + "\n")
    with pytest.raises(UserError, match="record 1: needs a non-empty list 'include'"):
        benchmarks.geneval_jsonl(jsonl)


def test_a_count_that_does_not_match_is_a_bug_report(mirror, monkeypatch):
    bench = benchmarks.get("hpsv3")
    monkeypatch.setitem(benchmarks.BENCHMARKS, "hpsv3", type(bench)(**{**bench.__dict__, "count": 1000}))
    with pytest.raises(UserError, match="parsed to 1024 prompts, the registry expects 1000"):
        benchmarks.load("hpsv3")
