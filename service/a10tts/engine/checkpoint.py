"""Reading `.pt` / `.safetensors` state dicts and comparing them with a model's expectations."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

Shape = tuple[int, ...]


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or does not fit the model; the message says how."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict on the CPU without executing pickled code.

    `.pt` files are opened memory-mapped (`weights_only=True`): the 2 GB LM file costs no
    copy until its tensors are moved to the device.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: file is empty (an interrupted download or copy?)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # torch and safetensors raise many types for damaged files
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({size} bytes; truncated or the wrong file?): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 8) -> str:
        parts = []
        for label, items in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                             ("shape mismatches", self.wrong_shape)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
                parts.append(f"{len(items)} {label}: {shown}")
        return "; ".join(parts)


def compare_keys(expected: Mapping[str, Shape], actual: Mapping[str, torch.Tensor | Shape]) -> KeyReport:
    """Which keys a checkpoint lacks, has in excess, or holds with another shape."""
    def shape(v: torch.Tensor | Shape) -> Shape:
        return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)

    return KeyReport(
        missing=sorted(expected.keys() - actual.keys()),
        unexpected=sorted(actual.keys() - expected.keys()),
        wrong_shape=sorted(
            f"{k} (file {list(shape(actual[k]))}, model {list(s)})"
            for k, s in expected.items() if k in actual and shape(actual[k]) != tuple(s)
        ),
    )
