"""Tuning profiles: list them, compare them, and record which one is active.

The active profile's name lives in the state directory, so switching never edits /etc.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, Problem
from .loader import LoadedConfig, available_profiles, load_config
from .paths import Dirs
from .tomlfile import ProblemList, read_toml


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Keys whose values differ between two flat configurations."""
    return [Change(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def profile_settings(dirs: Dirs, name: str) -> dict[str, Any]:
    """The raw keys one profile file sets (not merged), for `profile show`."""
    path = dirs.profiles / f"{name}.toml"
    if not path.exists():
        available = ", ".join(available_profiles(dirs)) or "none"
        raise ConfigError([Problem(str(path), "profile", f"profile '{name}' does not exist",
                                   hint=f"available: {available}")])
    try:
        return read_toml(path).data
    except ProblemList as exc:
        raise ConfigError(exc.problems) from None


def activate(dirs: Dirs, name: str, env: Mapping[str, str] | None = None) -> tuple[LoadedConfig, list[Change]]:
    """Validate the whole configuration under profile `name`, then record it as active.

    Raises ConfigError (and records nothing) when the result would be invalid.
    """
    try:
        before = load_config(dirs, env=env).flat()
    except ConfigError:
        before = {}  # switching away from a broken state is allowed; the new one must be valid
    after = load_config(dirs, env=env, profile=name)
    write_atomically(dirs.active_profile_file, name + "\n")
    return after, diff(before, after.flat())


def write_atomically(path: os.PathLike | str, text: str) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
