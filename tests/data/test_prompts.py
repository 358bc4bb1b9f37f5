"""Prompt files: every problem with one is a one-line UserError that names the file (and the line)."""

import json
import pathlib

import pytest

from rtdmd.data.prompts import load_prompts
from rtdmd.errors import UserError


def test_text_and_jsonl_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_bytes("\ufeffa cat\r\n\n  a dog  \nline\u2028with a separator\n".encode("utf-8"))
    assert load_prompts(txt).texts == ("a cat", "a dog", "line\u2028with a separator")
    jsonl = tmp_path / "p.jsonl"
    rows = [{"prompt": "two cats", "tag": "counting"}, {"prompt": "a\u2028b", "include": []}]
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    prompts = load_prompts(jsonl)
    assert prompts.texts == ("two cats", "a\u2028b")
    assert prompts.metadata == ({"tag": "counting"}, {"include": []})


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "holds no prompts"),
    ("blank.txt", b"\n  \n\t\n", "holds no prompts"),
    ("blank.jsonl", b"\n\n", "holds no prompts"),
    ("latin1.txt", "ok\ncaf\xe9\n".encode("latin-1"), r"not valid UTF-8 \(line 2, byte 6\)"),
    ("bad.jsonl", b'{"prompt": "a"}\n\n{"prompt": "b",}\n', r"line 3: malformed JSON"),
    ("noprompt.jsonl", b'{"prompt": "a"}\n{"text": "b"}\n', "line 2: each line needs a string field 'prompt'"),
    ("list.jsonl", b'["a"]\n', "line 1: each line needs a string field 'prompt'"),
    ("number.jsonl", b'{"prompt": 3}\n', "line 1: each line needs a string field 'prompt'"),
])
def test_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_prompts(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_directory_and_unreadable(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="is a directory"):
        load_prompts(tmp_path)
    path = tmp_path / "locked.txt"
    path.write_text("a\n")

    def denied(self):  # chmod 000 does not stop root, which runs CI containers: raise what open() would
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(UserError, match="cannot be read: Permission denied"):
        load_prompts(path)
