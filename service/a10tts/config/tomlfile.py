"""Reading TOML documents together with the line each key sits on (for error messages)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import Problem

KeyPath = tuple[str, ...]

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_SYNTAX_POS = re.compile(r"\(at line (\d+), column \d+\)")


def _split_key(dotted: str) -> KeyPath:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+", dotted)
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in parts)


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each table header and assigned key of a TOML text to its 1-based line."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE.match(line):
            table = _split_key(m.group(1))
            lines.setdefault(table, number)
        elif m := _ASSIGN.match(line):
            lines.setdefault(table + _split_key(m.group(1)), number)
    return lines


@dataclass
class TomlDocument:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key: KeyPath) -> int | None:
        # Fall back to the nearest enclosing table when the exact key is not on its own line.
        for end in range(len(key), 0, -1):
            if key[:end] in self.lines:
                return self.lines[key[:end]]
        return None


def parse_toml(text: str, path: Path) -> TomlDocument:
    """Parse TOML text; raises a one-item list of Problems on a syntax error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _SYNTAX_POS.search(str(exc))
        raise ProblemList(
            [
                Problem(
                    source=str(path),
                    key="",
                    line=int(m.group(1)) if m else None,
                    message=f"TOML syntax error: {_SYNTAX_POS.sub('', str(exc)).strip()}",
                    hint="see https://toml.io for the syntax; strings need quotes",
                )
            ]
        ) from None
    return TomlDocument(path=path, data=data, lines=key_lines(text))


def read_toml(path: Path) -> TomlDocument:
    """Read and parse a TOML file; raises ProblemList when unreadable or malformed."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ProblemList(
            [Problem(str(path), "", f"cannot read file: {exc.strerror or exc}", hint="check the path and its permissions")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ProblemList(
            [Problem(str(path), "", f"not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8")]
        ) from None
    return parse_toml(text, path)


def parse_value(text: str) -> Any:
    """Read an override value the TOML way (8080, true, "auto", [1, 2]); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class ProblemList(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))
