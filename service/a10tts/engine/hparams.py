"""Safe reader for CosyVoice's hyperpyyaml model configs (``cosyvoice2.yaml``).

Upstream loads the file with hyperpyyaml, which imports and calls every class the yaml
names. We never do that: tagged nodes become inert ``Node`` records and the engine maps
the few class names it knows onto its own modules (``a10tts.engine.model``).

Supported syntax: ``!new:``, ``!name:``, ``!apply:`` (recorded, never executed),
``!ref <key>`` with dotted keys and simple arithmetic (``!ref <a> * <b>``), and
``!copy <key>``. Keys starting with ``__`` (upstream's seed setters) are dropped.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class HparamsError(ValueError):
    """The model yaml is unreadable or inconsistent; the message says where."""


@dataclass
class Node:
    """A ``!new:``/``!name:``/``!apply:`` node: what upstream would construct or call."""

    kind: str  # "new" | "name" | "apply"
    target: str  # dotted upstream name, e.g. "cosyvoice.flow.flow.CausalMaskedDiffWithXvec"
    args: Any = field(default_factory=dict)  # mapping of kwargs, or a list of positional args

    @property
    def class_name(self) -> str:
        return self.target.rsplit(".", 1)[-1]


@dataclass
class _Ref:
    expr: str
    copy: bool
    where: str


_REF_TOKEN = re.compile(r"<([^<>]+)>")
# YAML 1.1 reads "1e-06" as a string; hyperpyyaml (and we) read it as a float.
_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$")
_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


class _Loader(yaml.SafeLoader):
    pass


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _construct_tagged(loader: _Loader, suffix: str, node: yaml.Node, kind: str) -> Node:
    if isinstance(node, yaml.MappingNode):
        args: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        args = loader.construct_sequence(node, deep=True)
    else:
        scalar = loader.construct_scalar(node)
        args = {} if scalar in ("", None) else [scalar]
    return Node(kind=kind, target=suffix, args=args)


for _kind in ("new", "name", "apply"):
    _Loader.add_multi_constructor(
        f"!{_kind}:",
        lambda loader, suffix, node, kind=_kind: _construct_tagged(loader, suffix, node, kind),
    )
_Loader.add_constructor(
    "!ref", lambda loader, node: _Ref(loader.construct_scalar(node), False, _where(node))
)
_Loader.add_constructor(
    "!copy", lambda loader, node: _Ref(loader.construct_scalar(node), True, _where(node))
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _lookup(root: Mapping[str, Any], dotted: str, where: str) -> Any:
    value: Any = root
    for part in dotted.split("."):
        if isinstance(value, Node):
            value = value.args
        if not isinstance(value, Mapping) or part not in value:
            raise HparamsError(f"{where}: !ref <{dotted}> names no such key")
        value = value[part]
    return value


def _eval_arith(expr: str, where: str) -> Any:
    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH:
            return _ARITH[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _ARITH:
            return _ARITH[type(n.op)](ev(n.operand))
        raise HparamsError(f"{where}: unsupported expression in !ref: {expr!r}")

    try:
        return ev(ast.parse(expr, mode="eval").body)
    except SyntaxError as exc:
        raise HparamsError(f"{where}: cannot parse !ref expression {expr!r}") from exc


def _resolve(value: Any, root: dict[str, Any], stack: tuple[str, ...]) -> Any:
    if isinstance(value, _Ref):
        expr = value.expr.strip()
        whole = _REF_TOKEN.fullmatch(expr)
        if whole:
            key = whole.group(1)
            if key in stack:
                raise HparamsError(f"{value.where}: circular !ref <{key}>")
            return _resolve(_lookup(root, key, value.where), root, stack + (key,))

        def substitute(m: re.Match[str]) -> str:
            resolved = _resolve(_lookup(root, m.group(1), value.where), root, stack + (m.group(1),))
            if not isinstance(resolved, (int, float)):
                raise HparamsError(f"{value.where}: <{m.group(1)}> is not a number in {expr!r}")
            return repr(resolved)

        return _eval_arith(_REF_TOKEN.sub(substitute, expr), value.where)
    if isinstance(value, Node):
        return Node(value.kind, value.target, _resolve(value.args, root, stack))
    if isinstance(value, dict):
        return {k: _resolve(v, root, stack) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root, stack) for v in value]
    return value


def parse_hparams(text: str, overrides: Mapping[str, Any] | None = None, source: str = "<yaml>") -> dict:
    """Parse hyperpyyaml text into plain data with ``Node`` records; overrides replace top-level keys."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.YAMLError as exc:
        raise HparamsError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise HparamsError(f"{source}: expected a mapping at the top level, found {type(raw).__name__}")
    root = {k: v for k, v in raw.items() if not str(k).startswith("__")}
    root.update(overrides or {})
    try:
        return {k: _resolve(v, root, (k,)) for k, v in root.items()}
    except HparamsError as exc:
        raise HparamsError(f"{source}: {exc}") from None


def load_hparams(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a model yaml file; see ``parse_hparams``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HparamsError(f"{path}: cannot read model config: {exc}") from exc
    return parse_hparams(text, overrides, source=str(path))


# --- reading module arguments (used by every module's from_hparams) -------------------------


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
