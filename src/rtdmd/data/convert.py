"""Converters of prompt sets that the registry (:mod:`rtdmd.data.benchmarks`) cannot fetch, to rtdmd's JSONL
prompt format (``{"prompt": ..., "tag": ...}`` per line, so that evaluation reports per-tag means).

- HPSv2 benchmark: ``benchmark/{anime,concept-art,paintings,photo}.json`` of the Hugging Face dataset
  ``zhwang/HPDv2`` (800 prompts each, a JSON list of strings), published on a model hub rather than at a
  pinned commit of a repository: :func:`hpsv2_to_jsonl`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from rtdmd.errors import UserError

HPSV2_STYLES = ("anime", "concept-art", "paintings", "photo")


def write_jsonl(records: Iterable[dict], dst: str | Path) -> int:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with dst.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def hpsv2_to_jsonl(folder: str | Path, dst: str | Path) -> int:
    """HPSv2 benchmark folder (``anime.json`` ... ``photo.json``) -> one JSONL with the style as tag."""
    records = []
    for style in HPSV2_STYLES:
        file = Path(folder) / f"{style}.json"
        if not file.is_file():
            raise UserError(f"{file} is missing: download benchmark/{style}.json of the dataset zhwang/HPDv2")
        prompts = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(prompts, list):
            raise UserError(f"{file}: expected a JSON list of prompts")
        for p in prompts:
            text = p if isinstance(p, str) else (p.get("prompt") or p.get("caption")) if isinstance(p, dict) else None
            if not isinstance(text, str):
                raise UserError(f"{file}: entries must be strings (or objects with a 'prompt')")
            records.append({"prompt": text, "tag": style})
    return write_jsonl(records, dst)
