"""Fetching: the download path against a loopback HTTP server serving the shared folder (whole, truncated,
corrupted, too long, missing), the mirror and the cache; every failure is one line and writes nothing."""

import os

import pytest

from rtdmd.data import benchmarks, fetch
from rtdmd.errors import UserError
from tests.data.conftest import cached_files

CLASSES = benchmarks.FILES["geneval/object_names.txt"]
GENEVAL = benchmarks.FILES["geneval/evaluation_metadata.jsonl"]


def test_download_verifies_caches_and_reuses(server, cache, datasets):
    path = fetch.fetch(GENEVAL)
    assert path == cache / "data" / GENEVAL.local and path.read_bytes() == (datasets / GENEVAL.local).read_bytes()
    assert fetch.fetch(GENEVAL) == path and server.requests == 1  # the second time from the cache
    assert [p.name for p in cached_files(cache)] == ["evaluation_metadata.jsonl"]  # no temporary file left


@pytest.mark.parametrize("mode, message", [
    ("truncate", r"is truncated \(42604 bytes, expected 85209\): refused, nothing cached"),
    ("corrupt", r"has sha256 [0-9a-f]{64}, expected 5c48e081.*: refused, nothing cached"),
    ("long", r"is too long \(85210 bytes, expected 85209\)"),
    ("missing", r"cannot download geneval/evaluation_metadata.jsonl from http://127.0.0.1:\d+/djghosh13/geneval/"
                r"af4902f24d3ca90ebbb446dd9891a59e0f82725f/prompts/evaluation_metadata.jsonl \(HTTP 404"),
])
def test_damaged_downloads_are_refused_and_not_cached(server, cache, mode, message):
    server.mode = mode
    with pytest.raises(UserError, match=message) as err:
        fetch.fetch(GENEVAL)
    assert "\n" not in str(err.value) and cached_files(cache) == []
    server.mode = "ok"  # a later good download succeeds
    assert fetch.fetch(GENEVAL).is_file()


def test_offline_names_the_file_and_the_two_ways(cache):
    with pytest.raises(UserError) as err:
        fetch.fetch(CLASSES)
    message = str(err.value)
    assert message.startswith("cannot download geneval/object_names.txt from http://127.0.0.1:9/")
    assert CLASSES.url in message  # the canonical location to fetch it from
    assert f"set RTDMD_DATA_MIRROR=DIR with it at DIR/{CLASSES.local}" in message
    assert f"or put it at {cache / 'data' / CLASSES.local}" in message
    assert "\n" not in message and cached_files(cache) == []


def test_mirror_replaces_the_download(mirror, cache, tmp_path, monkeypatch):
    assert fetch.fetch(CLASSES).read_bytes() == (mirror / CLASSES.local).read_bytes()
    other = tmp_path / "mirror"
    monkeypatch.setenv(fetch.MIRROR_ENV, str(other))
    with pytest.raises(UserError, match=f"RTDMD_DATA_MIRROR={other} has no geneval/evaluation_metadata.jsonl"):
        fetch.fetch(GENEVAL)
    (other / "geneval").mkdir(parents=True)
    (other / GENEVAL.local).write_bytes((mirror / GENEVAL.local).read_bytes().replace(b"bench", b"bunch", 1))
    with pytest.raises(UserError, match=f"from {other / GENEVAL.local} has sha256 .*refused, nothing cached"):
        fetch.fetch(GENEVAL)
    assert not (cache / "data" / GENEVAL.local).exists()


def test_a_damaged_cache_file_is_fetched_again(mirror, cache):
    target = cache / "data" / CLASSES.local
    target.parent.mkdir(parents=True)
    target.write_text("person\n")
    assert fetch.fetch(CLASSES).read_bytes() == (mirror / CLASSES.local).read_bytes()


def test_an_interrupted_cache_write_leaves_nothing(mirror, cache, monkeypatch):
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(UserError, match="cannot write .*object_names.txt \\(No space left on device\\)"):
        fetch.fetch(CLASSES)
    assert cached_files(cache) == []
