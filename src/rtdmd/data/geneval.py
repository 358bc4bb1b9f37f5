"""GenEval's prompt metadata: the schema of ``evaluation_metadata.jsonl`` and its validation.

One JSON object per prompt (in a JSONL prompt file it sits next to ``"prompt"``)::

    {"tag": "position",                                  # task name, for per-tag accuracy (optional)
     "include": [{"class": "tv remote", "count": 1},     # required objects
                 {"class": "cat", "count": 1, "color": "red", "position": ["right of", 0]}],
     "exclude": [{"class": "cat", "count": 2}]}          # "fewer than 2 cats"

``position`` is ``[relation, i]``: relative to the objects matched by ``include[i]`` (an earlier entry), with
relation one of ``left of``, ``right of``, ``above``, ``below``.

It lives in the data layer because three users read it: the benchmark registry (GenEval's test set), the
training-prompt generator (:mod:`rtdmd.data.geneval_prompts`) and the compositional reward that judges images
against it (:mod:`rtdmd.rewards.compositional`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtdmd.errors import UserError

RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class ObjectSpec:
    cls: str
    count: int = 1
    color: str | None = None
    position: tuple[str, int] | None = None


@dataclass(frozen=True)
class CompositionSpec:
    include: tuple[ObjectSpec, ...]
    exclude: tuple[ObjectSpec, ...] = ()
    tag: str | None = None

    @property
    def num_requirements(self) -> int:
        return len(self.include) + len(self.exclude)


def _object(raw: Any, where: str, index: int, allow_position: bool) -> ObjectSpec:
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: expected an object like {{\"class\": \"cat\", \"count\": 1}}, got {raw!r}")
    unknown = set(raw) - {"class", "count", "color", "position"}
    if unknown:
        raise UserError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: class, count, color, position)")
    cls, count, color, position = raw.get("class"), raw.get("count", 1), raw.get("color"), raw.get("position")
    if not isinstance(cls, str) or not cls:
        raise UserError(f"{where}: 'class' must be a non-empty string")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"{where}: 'count' must be a positive integer, got {count!r}")
    if color is not None and not isinstance(color, str):
        raise UserError(f"{where}: 'color' must be a string")
    if position is not None:
        if not allow_position:
            raise UserError(f"{where}: 'position' is only allowed in include entries")
        if (not isinstance(position, (list, tuple)) or len(position) != 2 or position[0] not in RELATIONS
                or isinstance(position[1], bool) or not isinstance(position[1], int)):
            raise UserError(f"{where}: 'position' must be [relation, index] with relation in {list(RELATIONS)}")
        if not 0 <= position[1] < index:
            raise UserError(f"{where}: 'position' must refer to an earlier include entry (0..{index - 1})")
        position = (position[0], position[1])
    return ObjectSpec(cls, count, color, position)


def parse_spec(metadata: Mapping[str, Any], where: str = "metadata") -> CompositionSpec:
    """Validate one prompt's metadata; every problem is a one-line :class:`UserError` naming the field."""
    if not isinstance(metadata, Mapping):
        raise UserError(f"{where}: expected a JSON object, got {type(metadata).__name__}")
    include, exclude = metadata.get("include"), metadata.get("exclude", [])
    if not isinstance(include, list) or not include:
        raise UserError(f"{where}: needs a non-empty list 'include' (e.g. [{{\"class\": \"cat\", \"count\": 1}}])")
    if not isinstance(exclude, list):
        raise UserError(f"{where}: 'exclude' must be a list")
    tag = metadata.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise UserError(f"{where}: 'tag' must be a string")
    return CompositionSpec(
        tuple(_object(o, f"{where}.include[{i}]", i, True) for i, o in enumerate(include)),
        tuple(_object(o, f"{where}.exclude[{i}]", i, False) for i, o in enumerate(exclude)), tag)


def parse_prompt_set(metadata: Sequence[Mapping[str, Any]], source: str = "prompts") -> list[CompositionSpec]:
    """Validate every record of a prompt set up front (so a bad line fails before any generation)."""
    return [parse_spec(m, f"{source} record {i + 1}") for i, m in enumerate(metadata)]
