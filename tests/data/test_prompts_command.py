"""``rtdmd prompts``: fetching through the command line (a wrong hash, a truncated download and an offline
machine each end in one line with exit code 2 and nothing cached), and ``rtdmd prompts geneval``."""

import pytest

from rtdmd import cli
from rtdmd.data import benchmarks, fetch
from rtdmd.data.prompts import load_prompts
from tests.data.conftest import cached_files

GENEVAL = benchmarks.FILES["geneval/evaluation_metadata.jsonl"]


def _wrong_hash(tmp_path, monkeypatch, datasets, server):
    bad = tmp_path / "mirror"
    (bad / "geneval").mkdir(parents=True)
    (bad / GENEVAL.local).write_bytes((datasets / GENEVAL.local).read_bytes().replace(b"bench", b"bunch", 1))
    monkeypatch.setenv(fetch.MIRROR_ENV, str(bad))


def _truncated(tmp_path, monkeypatch, datasets, server):
    server.mode = "truncate"


def _offline(tmp_path, monkeypatch, datasets, server):
    monkeypatch.setenv(fetch.URL_ENV, "http://127.0.0.1:9")  # nothing listens there


@pytest.mark.parametrize("damage, message", [
    (_wrong_hash, "has sha256"), (_truncated, "is truncated"), (_offline, "cannot download")])
def test_fetch_failures_are_one_line_with_exit_code_2(damage, message, tmp_path, monkeypatch, datasets, server,
                                                      cache, capsys):
    damage(tmp_path, monkeypatch, datasets, server)
    assert cli.main(["prompts", "fetch", "geneval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtdmd: error: ") and GENEVAL.local in err and message in err
    assert err.count("\n") == 1 and cached_files(cache) == []


def test_fetch_and_list(mirror, cache, capsys):
    assert cli.main(["prompts", "fetch", "geneval", "drawbench"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"rtdmd: geneval: 553 prompts, sha256 {GENEVAL.sha256} verified, cached at "
                      f"{cache / 'data' / GENEVAL.local}")
    assert out[1].startswith("rtdmd: drawbench: 200 prompts")
    assert cli.main(["prompts", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(benchmarks.BENCHMARKS)
    assert cli.main(["prompts", "fetch", "drawbnch"]) == 2
    assert "did you mean 'drawbench'" in capsys.readouterr().err


def test_geneval_command_writes_the_same_file_for_a_seed(mirror, tmp_path, capsys):
    def run(seed, name):
        out = tmp_path / name
        assert cli.main(["prompts", "geneval", "--num", "400", "--seed", str(seed), "--out", str(out)]) == 0
        return out

    first, again, other = run(1, "a.jsonl"), run(1, "b.jsonl"), run(2, "c.jsonl")
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()
    prompts = load_prompts(first)
    assert len(prompts) == 400 and {"tag", "include"} <= set(prompts.metadata[0])
    assert capsys.readouterr().out.startswith(f"rtdmd: wrote {first} (400 prompts, seed 1, sha256 ")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("args, message", [
    (["--num", "0", "--out", "x.jsonl"], "--num must be at least 1"),
    (["--num", "5", "--out", "."], "is a directory"),
    (["--num", "5", "--out", "x.txt"], "give a .jsonl file name"),
])
def test_geneval_command_bad_arguments(args, message, mirror, capsys):
    assert cli.main(["prompts", "geneval", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_geneval_command_offline(tmp_path, capsys, cache):
    assert cli.main(["prompts", "geneval", "--num", "5", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "cannot download geneval/evaluation_metadata.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists() and cached_files(cache) == []
