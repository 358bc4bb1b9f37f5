"""The public prompt sets the paper evaluates on, converted to rtdmd's JSONL prompt format (``{"prompt": ...,
"tag": ...}`` per line, so that evaluation reports per-tag means). None is shipped: their licences do not
clearly allow redistribution, or we could not fetch them here (docs/rewards.md, "Prompt sets").

- GenEval: ``prompts/evaluation_metadata.jsonl`` of github.com/djghosh13/geneval (553 prompts) is already in
  this format (``prompt``, ``tag``, ``include``/``exclude``); :func:`check_geneval` validates it.
- DrawBench: the CSV export of the Imagen team's DrawBench sheet (200 prompts, columns ``Prompts,Category``):
  :func:`drawbench_to_jsonl`.
- HPSv2 benchmark: ``benchmark/{anime,concept-art,paintings,photo}.json`` of the Hugging Face dataset
  ``zhwang/HPDv2`` (800 prompts each, a JSON list of strings): :func:`hpsv2_to_jsonl`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from rtdmd.data.geneval import parse_prompt_set
from rtdmd.data.prompts import PromptSet, load_prompts
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


def drawbench_to_jsonl(src: str | Path, dst: str | Path) -> int:
    """DrawBench CSV (``Prompts,Category``) -> JSONL with the category as tag; returns the number of prompts."""
    with Path(src).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "Prompts" not in rows[0]:
        raise UserError(f"{src}: expected a CSV with columns 'Prompts' and 'Category' (DrawBench's export)")
    return write_jsonl(({"prompt": r["Prompts"].strip(), "tag": (r.get("Category") or "").strip() or None}
                        for r in rows if r["Prompts"].strip()), dst)


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


def check_geneval(path: str | Path) -> PromptSet:
    """Load GenEval's ``evaluation_metadata.jsonl`` and validate every record's metadata."""
    prompts = load_prompts(path)
    parse_prompt_set(prompts.metadata, str(path))
    return prompts
