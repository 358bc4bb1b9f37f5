"""GenEval-style training prompts, generated here (the published recipes train stage 2 on such prompts, and the
authors' training file is not published).

The recipe follows GenEval's own prompt generation (facts of its paper and repository, re-implemented):

- six tasks, each a template over GenEval's 80 object classes (``object_names.txt``, fetched through the
  registry) and its 10 colours; counts 2-4 (with an ``exclude`` of count + 1, "exactly n"); the relations
  ``left of``, ``right of``, ``above``, ``below``; two-object tasks use two different classes (and
  ``color_attr`` two different colours);
- the wording is GenEval's: "a photo of ..." with "an" before a vowel letter and plurals formed by appending
  "es" after a final "s" and "s" otherwise (GenEval's own "benchs", "sheeps", "knifes"), so that training and
  test prompts share one phrasing (:func:`render` reproduces all 553 test prompts from their metadata);
- every test prompt is removed: a generated prompt is redrawn when it normalises to a test prompt
  (:func:`normalise`) or asks for the same thing as one (:func:`requirement_key`: the same objects, counts,
  colours, exclusions and relations, whatever the order of the objects or the mirrored wording of a relation);
- tasks are mixed as Flow-GRPO's GenEval training set weights them: position 0.7, color_attr 0.3, counting 0.5,
  colors 0.1, two_object 0.1 (normalised; single_object 0, and all 80 of its prompts are test prompts anyway).

The number of prompts per task is fixed by the weights (largest remainders), so the mix is exact at any size;
the order of the tasks and every choice within a task come from one ``random.Random(seed)``, so a seed gives the
same file on any machine. Records are GenEval's schema (:mod:`rtdmd.data.geneval`), in its field order.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rtdmd.data import benchmarks
from rtdmd.data.fetch import fetch
from rtdmd.data.geneval import RELATIONS
from rtdmd.data.prompts import PromptSet
from rtdmd.errors import UserError

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
NUMBERS = {2: "two", 3: "three", 4: "four"}
TASK_WEIGHTS = {"position": 0.7, "color_attr": 0.3, "counting": 0.5, "colors": 0.1, "two_object": 0.1}
MIRRORED = {"right of": "left of", "below": "above"}  # "A right of B" asks what "B left of A" asks
MAX_REDRAWS = 10_000  # consecutive test-set hits before a task is declared exhausted
CLASS_FILE = "geneval/object_names.txt"

Record = dict[str, Any]


# ----------------------------------------------------------------------------------------------------------
# Wording

def article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def plural(noun: str) -> str:
    return noun + "es" if noun.endswith("s") else noun + "s"


def _one(entry: Mapping[str, Any]) -> str:
    phrase = f"{entry['color']} {entry['class']}" if entry.get("color") else entry["class"]
    return f"{article(phrase)} {phrase}"


def render(record: Mapping[str, Any]) -> str:
    """The prompt of a GenEval record (``tag`` and ``include``), in GenEval's templates."""
    include = record["include"]
    if record["tag"] == "counting":
        return f"a photo of {NUMBERS[include[0]['count']]} {plural(include[0]['class'])}"
    if record["tag"] == "position":
        return f"a photo of {_one(include[1])} {include[1]['position'][0]} {_one(include[0])}"
    return "a photo of " + " and ".join(_one(entry) for entry in include)


# ----------------------------------------------------------------------------------------------------------
# Records per task (metadata without the prompt)

def _single_object(rng: random.Random, classes: Sequence[str]) -> Record:
    return {"tag": "single_object", "include": [{"class": rng.choice(classes), "count": 1}]}


def _two_object(rng: random.Random, classes: Sequence[str]) -> Record:
    a, b = rng.sample(classes, 2)
    return {"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}]}


def _counting(rng: random.Random, classes: Sequence[str]) -> Record:
    cls, count = rng.choice(classes), rng.choice(sorted(NUMBERS))
    return {"tag": "counting", "include": [{"class": cls, "count": count}],
            "exclude": [{"class": cls, "count": count + 1}]}


def _colors(rng: random.Random, classes: Sequence[str]) -> Record:
    return {"tag": "colors", "include": [{"class": rng.choice(classes), "count": 1, "color": rng.choice(COLORS)}]}


def _position(rng: random.Random, classes: Sequence[str]) -> Record:
    reference, placed = rng.sample(classes, 2)
    return {"tag": "position", "include": [{"class": reference, "count": 1},
                                           {"class": placed, "count": 1, "position": [rng.choice(RELATIONS), 0]}]}


def _color_attr(rng: random.Random, classes: Sequence[str]) -> Record:
    (a, b), (color_a, color_b) = rng.sample(classes, 2), rng.sample(COLORS, 2)
    return {"tag": "color_attr", "include": [{"class": a, "count": 1, "color": color_a},
                                             {"class": b, "count": 1, "color": color_b}]}


TASKS: dict[str, Callable[[random.Random, Sequence[str]], Record]] = {
    "single_object": _single_object, "two_object": _two_object, "counting": _counting, "colors": _colors,
    "position": _position, "color_attr": _color_attr}


# ----------------------------------------------------------------------------------------------------------
# Test-set exclusion

def normalise(prompt: str) -> str:
    """The form under which two prompts count as the same: Unicode NFKC, case-folded, whitespace runs
    collapsed to one space, trimmed, without a final full stop."""
    text = " ".join(unicodedata.normalize("NFKC", prompt).casefold().split())
    return text.removesuffix(".").rstrip()


def requirement_key(record: Mapping[str, Any]) -> frozenset:
    """What a record asks for, independent of wording: the required objects (class, count, colour), the
    excluded counts, and the relations with mirrored ones turned around (``right of`` -> ``left of``)."""
    include = record["include"]
    atoms: set[tuple] = {("has", e["class"], e.get("count", 1), e.get("color")) for e in include}
    atoms |= {("not", e["class"], e.get("count", 1)) for e in record.get("exclude", [])}
    for entry in include:
        if entry.get("position"):
            relation, target = entry["position"]
            a, b = entry["class"], include[target]["class"]
            atoms.add(("rel", b, MIRRORED[relation], a) if relation in MIRRORED else ("rel", a, relation, b))
    return frozenset(atoms)


class HeldOutSet:
    """The prompts and requirements of a test set, to refuse them."""

    def __init__(self, texts: Iterable[str], metadata: Iterable[Mapping[str, Any]]):
        self.prompts = {normalise(t) for t in texts}
        self.requirements = {requirement_key(m) for m in metadata}

    def holds(self, prompt: str, record: Mapping[str, Any]) -> bool:
        return normalise(prompt) in self.prompts or requirement_key(record) in self.requirements


# ----------------------------------------------------------------------------------------------------------
# Generation

def task_counts(weights: Mapping[str, float], num: int) -> dict[str, int]:
    """Prompts per task, proportional to ``weights`` (normalised), rounded by largest remainders so that they
    sum to ``num``; ties go to the task listed first."""
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise UserError(f"unknown GenEval task {sorted(unknown)[0]!r} (tasks: {', '.join(TASKS)})")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise UserError(f"task weights must be >= 0 with a positive sum, got {dict(weights)}")
    total = sum(weights.values())
    exact = {task: num * w / total for task, w in weights.items()}
    counts = {task: int(share) for task, share in exact.items()}
    by_remainder = sorted(weights, key=lambda t: (-(exact[t] - counts[t]), list(weights).index(t)))
    for task in by_remainder[:num - sum(counts.values())]:
        counts[task] += 1
    return counts


def generate(num: int, seed: int, classes: Sequence[str], test: HeldOutSet,
             weights: Mapping[str, float] = TASK_WEIGHTS) -> PromptSet:
    """``num`` GenEval-style prompts with metadata, none of them a test prompt (module docstring)."""
    if num < 1:
        raise UserError(f"the number of prompts must be at least 1, got {num}")
    if len(set(classes)) < 2:
        raise UserError("GenEval-style prompts need at least 2 object classes")
    rng = random.Random(seed)
    tasks = [task for task, n in task_counts(weights, num).items() for _ in range(n)]
    rng.shuffle(tasks)
    texts, metadata = [], []
    for task in tasks:
        for _ in range(MAX_REDRAWS):
            record = TASKS[task](rng, classes)
            prompt = render(record)
            if not test.holds(prompt, record):
                break
        else:
            raise UserError(f"task {task!r}: every prompt drawn is a test prompt (its combinations are exhausted): "
                            "give it weight 0")
        texts.append(prompt)
        metadata.append(record)
    return PromptSet(tuple(texts), tuple(metadata))


def read_classes(path: Path) -> list[str]:
    classes = [line.strip() for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if len(set(classes)) != len(classes):
        raise UserError(f"{path}: the class list repeats a class")
    return classes


def training_prompts(num: int, seed: int) -> PromptSet:
    """``num`` prompts from GenEval's classes (fetched, verified), disjoint from GenEval's test set."""
    test = benchmarks.load("geneval")
    classes = read_classes(fetch(benchmarks.FILES[CLASS_FILE]))
    return generate(num, seed, classes, HeldOutSet(test.texts, test.metadata))


def to_jsonl(prompts: PromptSet) -> str:
    """JSONL in GenEval's layout: each record's metadata fields, then ``prompt``."""
    return "".join(json.dumps({**meta, "prompt": text}, ensure_ascii=False) + "\n"
                   for text, meta in zip(prompts.texts, prompts.metadata))
