"""Configuration problems: each names where it is, which key, what was expected and found."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    source: str  # a file path, "environment" or "command line"
    key: str  # dotted key, "" when the problem is the whole source
    message: str
    line: int | None = None
    expected: str | None = None
    found: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        if self.expected is not None:
            text += f"\n    expected: {self.expected}"
        if self.found is not None:
            text += f"\n    found:    {self.found}"
        if self.hint:
            text += f"\n    hint:     {self.hint}"
        return text


class ConfigError(Exception):
    """Invalid configuration; carries every problem found, not only the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"invalid configuration ({count}):\n" + "\n".join(f"  {p}" for p in problems))
