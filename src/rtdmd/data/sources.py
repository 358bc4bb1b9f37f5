"""Where a prompt set comes from, written as one string wherever a config takes a prompt set (the prompts world's
``train``, ``align_train`` and ``eval``)::

    prompts/train.jsonl                      a file: .txt (one prompt per line) or .jsonl (prompt + metadata)
    benchmark:pickapic_sfw/train             a registered public set (``rtdmd prompts list``), fetched on first
                                             use and checked against its sha256 (rtdmd.data.benchmarks)
    generated:geneval?num=50000&seed=0       made by a registered generator from fetched inputs; ``geneval``:
                                             the prompts ``rtdmd prompts geneval --num 50000 --seed 0`` writes

:func:`parse_source` checks the spelling without touching files or the network (config loading stays fast and
offline); :meth:`PromptSource.load` reads, fetches or generates. A file whose name starts with ``benchmark:`` or
``generated:`` is written ``./benchmark:...``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rtdmd.config.strict import suggest
from rtdmd.data import benchmarks, geneval_prompts
from rtdmd.data.prompts import PromptSet, load_prompts
from rtdmd.errors import ConfigError

BENCHMARK = "benchmark:"
GENERATED = "generated:"

# name -> generator(num, seed) -> PromptSet
GENERATORS: dict[str, Callable[[int, int], PromptSet]] = {"geneval": geneval_prompts.training_prompts}


@dataclass(frozen=True)
class PromptSource:
    kind: Literal["file", "benchmark", "generated"]
    name: str  # file path, registered set, or generator
    num: int = 0  # generated: number of prompts
    seed: int = 0  # generated: seed

    def load(self) -> PromptSet:
        if self.kind == "benchmark":
            return benchmarks.load(self.name)
        if self.kind == "generated":
            return GENERATORS[self.name](self.num, self.seed)
        return load_prompts(self.name)

    def __str__(self) -> str:
        if self.kind == "benchmark":
            return BENCHMARK + self.name
        if self.kind == "generated":
            return f"{GENERATED}{self.name}?num={self.num}&seed={self.seed}"
        return self.name


def parse_source(text: str) -> PromptSource:
    """The source a string names (module docstring); a malformed one is a one-line :class:`ConfigError`."""
    if text.startswith(BENCHMARK):
        name = text.removeprefix(BENCHMARK)
        if name not in benchmarks.BENCHMARKS:
            raise ConfigError(f"unknown prompt set {name!r} in {text!r}"
                              f"{suggest(name, benchmarks.BENCHMARKS, BENCHMARK)}")
        return PromptSource("benchmark", name)
    if text.startswith(GENERATED):
        return _generated(text)
    if not text.strip():
        raise ConfigError("a prompt source must name a file, benchmark:NAME or generated:NAME?num=N&seed=S")
    return PromptSource("file", text)


def _generated(text: str) -> PromptSource:
    name, _, query = text.removeprefix(GENERATED).partition("?")
    usage = f"write it as {GENERATED}{name or 'geneval'}?num=N&seed=S"
    if name not in GENERATORS:
        raise ConfigError(f"unknown prompt generator {name!r} in {text!r} (generators: {', '.join(GENERATORS)})")
    try:
        params = dict(urllib.parse.parse_qsl(query, strict_parsing=True))
        num, seed = int(params.pop("num")), int(params.pop("seed"))
    except (ValueError, KeyError):
        raise ConfigError(f"{text!r} needs an integer num and seed: {usage}") from None
    if params or num < 1:
        raise ConfigError(f"{text!r}: num must be >= 1 and num, seed the only parameters: {usage}")
    return PromptSource("generated", name, num, seed)
