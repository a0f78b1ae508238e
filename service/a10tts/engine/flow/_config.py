"""Helpers that read a module's hyper-parameters from the parsed model yaml.

``a10tts.engine.hparams`` turns every ``!new:`` node into a ``Node`` record; a module's
``from_hparams`` receives that node's ``args`` mapping, with nested modules still as nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def require(args: Mapping[str, Any], key: str, where: str) -> Any:
    """The value of a key the module cannot be built without."""
    if key not in args:
        raise ValueError(f"{where}: missing required key '{key}'")
    return args[key]


def nested_args(
    args: Mapping[str, Any], key: str, where: str, expected_class: str | None = None
) -> Mapping[str, Any]:
    """Arguments of the nested ``!new:`` node (or plain mapping) stored under ``key``."""
    value = require(args, key, where)
    target = getattr(value, "target", None)
    if expected_class is not None and target is not None and target.rsplit(".", 1)[-1] != expected_class:
        raise ValueError(f"{where}.{key}: expected {expected_class}, found {target}")
    inner = getattr(value, "args", value)
    if not isinstance(inner, Mapping):
        raise ValueError(f"{where}.{key}: expected a mapping of arguments, found {type(inner).__name__}")
    return inner


def check_supported(
    args: Mapping[str, Any], key: str, supported: Any, upstream_default: Any, where: str
) -> None:
    """Refuse a setting whose architecture we do not implement (CosyVoice2 uses ``supported``).

    An absent key means upstream's constructor default, which may differ from CosyVoice2's value.
    """
    value = args.get(key, upstream_default)
    if value != supported:
        raise ValueError(f"{where}.{key}={value!r} is not supported (CosyVoice2 uses {supported!r})")
