"""The report's pieces: markdown tables, unit formatting, and the collector the sections write into."""

from __future__ import annotations


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f}"


def gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    def __init__(self):
        self.parts: list[str] = []
        self.data: dict = {}
        self.summary: list[list] = []
        self.switch_rows: list[list] = []  # section 2's table, written once the memory section is complete

    def add(self, text: str) -> None:
        self.parts.append(text.strip("\n") + "\n")

    def target(self, what: str, value: str, met: bool | None, note: str = "") -> None:
        status = "n/a" if met is None else ("met" if met else "NOT met")
        self.summary.append([what, value, status, note])

