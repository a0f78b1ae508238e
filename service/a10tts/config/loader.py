"""Layered configuration: defaults, files, active profile, environment, command line.

Later layers win and tables merge deeply. Every layer is validated on its own (so a broken
file is reported even when a later layer overrides the broken value) and then the merged
result once more; all problems are collected and raised together as one ConfigError.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, Problem
from .paths import DIR_ENV_VARS, Dirs
from .schema import PROFILE_FORBIDDEN_KEYS, Config
from .tomlfile import KeyPath, ProblemList, TomlDocument, parse_value, read_toml

ENV_PREFIX = "A10TTS_"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Layer:
    label: str  # where the values come from, as problems show it
    data: dict[str, Any]
    line_of: Callable[[KeyPath], int | None] = lambda key: None
    origin_of: Callable[[KeyPath], str] | None = None
    is_profile: bool = False

    def origin(self, key: KeyPath) -> str:
        if self.origin_of:
            return self.origin_of(key)
        line = self.line_of(key)
        return f"{self.label}:{line}" if line else self.label


@dataclass
class LoadedConfig:
    config: Config
    dirs: Dirs
    profile: str
    provenance: dict[str, str] = field(default_factory=dict)  # dotted key -> origin

    def flat(self) -> dict[str, Any]:
        return flatten(self.config.model_dump(mode="json"))


def flatten(data: Mapping[str, Any], prefix: KeyPath = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix + (key,)))
        else:
            out[".".join(prefix + (key,))] = value
    return out


def _leaf_paths(data: Mapping[str, Any], prefix: KeyPath = ()) -> Iterable[KeyPath]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nest(path: KeyPath, value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


# --- mapping pydantic errors onto keys, lines and hints -------------------------------------


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for key in path:
        info = model.model_fields.get(key)
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _schema_key(loc: tuple[Any, ...]) -> KeyPath:
    """The longest prefix of a pydantic error location that names real keys (drops union tags)."""
    path: KeyPath = ()
    for part in loc:
        model = _model_at(path)
        if model is None or str(part) not in model.model_fields:
            if model is not None and not path:
                return (str(part),)
            break
        path += (str(part),)
    return path or tuple(str(p) for p in loc[:1])


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    return json.dumps(value, default=str)


def _problems_from(exc: ValidationError, layer: Layer) -> list[Problem]:
    grouped: dict[KeyPath, list[dict[str, Any]]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = tuple(str(p) for p in loc) if err["type"] == "extra_forbidden" else _schema_key(loc)
        grouped.setdefault(key, []).append(err)

    problems = []
    for key, errs in grouped.items():
        dotted = ".".join(key)
        if errs[0]["type"] == "extra_forbidden":
            parent = _model_at(key[:-1])
            known = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(key[-1], known, n=1, cutoff=0.6)
            hint = f"did you mean '{'.'.join(key[:-1] + (close[0],))}'?" if close else None
            if not hint and known:
                hint = "valid keys here: " + ", ".join(known)
            problems.append(Problem(layer.label, dotted, "unknown key", layer.line_of(key), hint=hint))
            continue
        expected = " or ".join(dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in errs))
        problems.append(
            Problem(
                layer.label,
                dotted,
                "invalid value",
                layer.line_of(key),
                expected=expected,
                found=_show(errs[0].get("input")),
            )
        )
    return problems


def _validate(layer: Layer) -> list[Problem]:
    problems = []
    if layer.is_profile:
        for key in PROFILE_FORBIDDEN_KEYS:
            if key[0] in layer.data:
                problems.append(
                    Problem(layer.label, ".".join(key), "cannot be set inside a profile",
                            layer.line_of(key), hint="set it in a10tts.toml or use `a10tts profile use`")
                )
    try:
        Config.model_validate(layer.data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, layer))
    return problems


# --- the layers ------------------------------------------------------------------------------


def _file_layer(doc: TomlDocument, is_profile: bool = False) -> Layer:
    return Layer(str(doc.path), doc.data, doc.line_of, is_profile=is_profile)


def _override_layer(label: str, items: list[tuple[KeyPath, Any, str]]) -> Layer:
    data: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    for path, value, origin in items:
        data = deep_merge(data, _nest(path, value))
        origins[path] = origin
    return Layer(label, data, origin_of=lambda key: origins.get(key, label))


def env_layer(env: Mapping[str, str]) -> Layer:
    """`A10TTS_SERVER__PORT=8081` sets server.port (double underscore between levels)."""
    items = []
    for name, raw in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and name not in DIR_ENV_VARS:
            path = tuple(name[len(ENV_PREFIX):].lower().split("__"))
            items.append((path, parse_value(raw), f"environment {name}"))
    return _override_layer("environment", items)


def cli_layer(assignments: Iterable[str]) -> tuple[Layer, list[Problem]]:
    """`--set llm.max_running_requests=64` style overrides."""
    items, problems = [], []
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            problems.append(Problem("command line", "", f"--set {text!r} is not KEY=VALUE",
                                    hint="e.g. --set server.port=8081"))
            continue
        items.append((tuple(key.strip().split(".")), parse_value(raw.strip()), f"command line --set {text}"))
    return _override_layer("command line", items), problems


def _read(path: Path, problems: list[Problem], is_profile: bool = False) -> Layer | None:
    try:
        return _file_layer(read_toml(path), is_profile)
    except ProblemList as exc:
        problems.extend(exc.problems)
        return None


def _state_layer(dirs: Dirs, problems: list[Problem]) -> Layer | None:
    path = dirs.active_profile_file
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), "profile", f"cannot read the active profile: {exc}"))
        return None
    return Layer(str(path), {"profile": name}, lambda key: 1)


def available_profiles(dirs: Dirs) -> list[str]:
    return sorted(p.stem for p in dirs.profiles.glob("*.toml")) if dirs.profiles.is_dir() else []


def load_config(
    dirs: Dirs,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
    profile: str | None = None,
) -> LoadedConfig:
    """Load, merge and validate every layer; raise ConfigError listing all problems.

    `profile` (e.g. a profile about to be activated) replaces the recorded active profile.
    """
    env = os.environ if env is None else env
    problems: list[Problem] = []
    layers: list[Layer] = []
    if not dirs.config.is_dir():
        raise ConfigError([Problem(str(dirs.config), "", "configuration directory does not exist",
                                   hint="pass --config-dir DIR or set A10TTS_CONFIG_DIR")])
    if dirs.main_file.exists():
        layers.append(_read(dirs.main_file, problems))
    if dirs.conf_d.is_dir():
        layers.extend(_read(p, problems) for p in sorted(dirs.conf_d.glob("*.toml")))
    if profile is not None:
        layers.append(Layer("requested profile", {"profile": profile}))
    else:
        layers.append(_state_layer(dirs, problems))
    cli, cli_problems = cli_layer(overrides)
    problems.extend(cli_problems)
    layers += [env_layer(env), cli]
    layers = [layer for layer in layers if layer is not None]

    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.data)
    name = merged.get("profile", Config.model_fields["profile"].default)
    profile_layer = _profile_layer(dirs, name, layers, problems)
    if profile_layer is not None:
        # The profile sits between the files and the environment.
        position = next(i for i, layer in enumerate(layers) if layer.label in ("environment",))
        layers.insert(position, profile_layer)

    for layer in layers:
        problems.extend(_validate(layer))
    if problems:
        raise ConfigError(_dedupe(problems))

    merged = {}
    for layer in layers:
        merged = deep_merge(merged, layer.data)
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:  # e.g. a profile value rejected only in combination
        raise ConfigError(_problems_from(exc, Layer("merged configuration", merged))) from None

    provenance = {key: "default" for key in flatten(config.model_dump(mode="json"))}
    for layer in layers:
        for path in _leaf_paths(layer.data):
            provenance[".".join(path)] = layer.origin(path)
    return LoadedConfig(config=config, dirs=dirs, profile=config.profile, provenance=provenance)


def _profile_layer(dirs: Dirs, name: Any, layers: list[Layer], problems: list[Problem]) -> Layer | None:
    setter = next((layer for layer in reversed(layers) if "profile" in layer.data), None)
    where = (setter.label, setter.line_of(("profile",))) if setter else ("default", None)
    if not isinstance(name, str) or not PROFILE_NAME.match(name):
        return None  # the schema check reports the bad name with its source
    path = dirs.profiles / f"{name}.toml"
    if not path.exists():
        available = available_profiles(dirs)
        problems.append(
            Problem(where[0], "profile", f"profile '{name}' does not exist", where[1],
                    expected=f"a file {path}",
                    hint=("available: " + ", ".join(available)) if available
                    else f"no profiles in {dirs.profiles}")
        )
        return None
    return _read(path, problems, is_profile=True)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
