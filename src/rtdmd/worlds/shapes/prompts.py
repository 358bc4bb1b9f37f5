"""The compositional prompt grammar of the shapes world, in the style of GenEval.

Six tags, each prompt with GenEval-like metadata (``tag`` and ``include: [{class, count, color?, position?}]``,
``position: [relation, j]`` meaning "this entry is <relation> entry j"):

=============  ==========================================  ==============================================
tag            example                                     checked by the oracle
=============  ==========================================  ==============================================
single_object  "a triangle"                                at least one triangle
colors         "a red circle"                              at least one red circle
counting       "three squares"                             exactly three squares
two_object     "a circle and a square"                     at least one of each
color_attr     "a red circle and a blue square"            a red circle and a blue square
position       "a circle left of a square"                 a circle whose centroid is left of a square's
=============  ==========================================  ==============================================

The grammar is finite (90 prompts: 3 shapes, 3 colours, counts 1-4, 4 relations); :func:`split` holds out a fixed third of every tag, deterministically.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rtdmd.data.prompts import PromptSet
from rtdmd.worlds.shapes.render import COLORS, RELATIONS, SHAPES

TAGS = ("single_object", "colors", "counting", "two_object", "color_attr", "position")
NUMBERS = ("one", "two", "three", "four")
SPLIT_SEED = 5
HELD_OUT_FRACTION = 1 / 3


def _noun(shape: str, count: int = 1) -> str:
    return shape if count == 1 else shape + "s"


def _record(prompt: str, tag: str, include: list[dict[str, Any]]) -> dict[str, Any]:
    return {"prompt": prompt, "tag": tag, "include": include}


def grammar() -> list[dict[str, Any]]:
    """Every prompt of the world as a JSON-ready record ``{"prompt", "tag", "include"}``, in a fixed order."""
    records = []
    for s in SHAPES:
        records.append(_record(f"a {s}", "single_object", [{"class": s, "count": 1}]))
    for c, s in itertools.product(COLORS, SHAPES):
        records.append(_record(f"a {c} {s}", "colors", [{"class": s, "count": 1, "color": c}]))
    for n, s in itertools.product(range(1, len(NUMBERS) + 1), SHAPES):
        records.append(_record(f"{NUMBERS[n - 1]} {_noun(s, n)}", "counting", [{"class": s, "count": n}]))
    for a, b in itertools.permutations(SHAPES, 2):
        records.append(_record(f"a {a} and a {b}", "two_object",
                               [{"class": a, "count": 1}, {"class": b, "count": 1}]))
    for (a, b), (ca, cb) in itertools.product(itertools.permutations(SHAPES, 2), itertools.permutations(COLORS, 2)):
        records.append(_record(f"a {ca} {a} and a {cb} {b}", "color_attr",
                               [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]))
    for (a, b), rel in itertools.product(itertools.permutations(SHAPES, 2), RELATIONS):
        # GenEval's form: the second object is the anchor (entry 0), the first is placed relative to it.
        records.append(_record(f"a {a} {rel} a {b}", "position",
                               [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}]))
    return records


def vocabulary() -> list[str]:
    """All words of the grammar, sorted (the tokenizers' and the text models' vocabulary)."""
    return sorted({w for r in grammar() for w in r["prompt"].split()})


def split(records: Iterable[Mapping[str, Any]], seed: int = SPLIT_SEED) -> dict[str, list[dict[str, Any]]]:
    """``{"train": [...], "eval": [...]}``: per tag, a seeded permutation puts ``ceil(n / 3)`` prompts in the
    held-out ``eval`` split and the rest in ``train``. Both keep the grammar's order."""
    records = [dict(r) for r in records]
    held_out: set[int] = set()
    for t, tag in enumerate(TAGS):
        members = [i for i, r in enumerate(records) if r["tag"] == tag]
        n_eval = int(np.ceil(len(members) * HELD_OUT_FRACTION))
        order = np.random.default_rng([seed, t]).permutation(len(members))
        held_out.update(members[k] for k in order[:n_eval])
    return {"train": [r for i, r in enumerate(records) if i not in held_out],
            "eval": [r for i, r in enumerate(records) if i in held_out]}


def to_prompt_set(records: Iterable[Mapping[str, Any]]) -> PromptSet:
    records = list(records)
    return PromptSet(tuple(r["prompt"] for r in records),
                     tuple({k: v for k, v in r.items() if k != "prompt"} for r in records))


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    lines = [json.dumps(dict(r), sort_keys=False) for r in records]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def sample_records(rng: np.random.Generator, n: int, records: list[dict[str, Any]] | None = None) -> list[dict]:
    """``n`` records drawn with a uniform tag, then a uniform prompt within the tag (the teacher's and the
    reward models' training distribution when ``records`` is the whole grammar)."""
    records = records if records is not None else grammar()
    by_tag = {tag: [r for r in records if r["tag"] == tag] for tag in TAGS}
    by_tag = {tag: rs for tag, rs in by_tag.items() if rs}
    tags = list(by_tag)
    out = []
    for _ in range(n):
        members = by_tag[tags[rng.integers(len(tags))]]
        out.append(members[rng.integers(len(members))])
    return out
