"""What every claim of the study reports: per-seed values of each arm, the paired difference that decides the
claim with its standard error, and a plain verdict. A claim module exposes ``run(out, quick) -> Claim``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def standard_error(values: Sequence[float]) -> float:
    """``std / sqrt(n)`` with the unbiased variance; NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)


@dataclass
class Row:
    """One measured statement: ``arms`` maps an arm's name to its per-seed values (same seeds in every arm, so
    differences are paired); ``decision`` names the two arms whose paired difference (first - second) decides it."""

    statement: str
    metric: str
    arms: dict[str, list[float]]
    decision: tuple[str, str] | None = None
    verdict: str = ""
    lower_is_better: bool = False

    def summary(self, arm: str) -> tuple[float, float]:
        return mean(self.arms[arm]), standard_error(self.arms[arm])

    def paired(self) -> tuple[float, float] | None:
        if self.decision is None:
            return None
        a, b = (self.arms[name] for name in self.decision)
        diffs = [x - y for x, y in zip(a, b)]
        return mean(diffs), standard_error(diffs)


@dataclass
class Claim:
    number: int
    title: str
    rows: list[Row] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # file names under docs/img
    notes: list[str] = field(default_factory=list)  # plain sentences: what the numbers say, what did not reproduce
    seconds: float = 0.0
    command: str = ""


def markdown(claim: Claim) -> str:
    """The claim as a markdown section: a table of rows (mean ± SE per arm, the deciding paired difference, the
    verdict), the notes and the figures."""
    lines = [f"## Claim {claim.number}: {claim.title}", ""]
    for row in claim.rows:
        arms = "; ".join(f"{name} {m:.4g} ± {se:.2g}" for name, (m, se) in
                         ((n, row.summary(n)) for n in row.arms))
        paired = row.paired()
        decided = "–" if paired is None else f"{row.decision[0]} − {row.decision[1]} = {paired[0]:+.4g} ± {paired[1]:.2g}"
        seeds = len(next(iter(row.arms.values())))
        lines.append(f"- **{row.statement}** ({row.metric}, {seeds} seeds): {arms}. Paired: {decided}. "
                     f"**Verdict: {row.verdict}**")
    lines += [""] + [f"{n}" for n in claim.notes] + [""]
    lines += [f"![claim {claim.number}](img/{f})" for f in claim.figures]
    if claim.command:
        lines += ["", f"Reproduce: `{claim.command}` ({claim.seconds / 60:.0f} min here)."]
    return "\n".join(lines) + "\n"
