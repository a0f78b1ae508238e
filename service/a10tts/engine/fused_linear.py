"""One GEMM for several projections of the same input, under upstream's state-dict keys.

On the GPU the LM's batch-1 decode step and the flow estimator's Euler step are launch-bound:
each kernel costs a few microseconds whatever its size. So q/k/v (and the MLP's gate/up) run
as one ``nn.Linear`` whose output is split into the parts.

Checkpoints keep upstream's separate keys (``q_proj.weight``, ``k_proj.bias``, ...), in
upstream's order. ``fuse_linears`` registers two hooks: on the fused layer, a state-dict
post-hook that puts each part's rows under the part's key in the owner (views, no copy: clone
them for safetensors, which refuses tensors sharing storage); on the owner, a load pre-hook
that concatenates the parts' tensors into the fused key. A missing or mis-shaped part is
reported under its own key and keeps its current rows, as a separate ``nn.Linear`` would.
Only ``state_dict(keep_vars=True)``, which asks for the Parameters themselves (as torch.jit's
tracer, hence the ONNX export, does), gets the fused ones.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import SimpleNamespace

import torch
from torch import Tensor, nn


class FusedLinear(nn.Linear):
    """A Linear whose output features are its ``parts`` (name -> out_features), in order."""

    def __init__(self, in_features: int, parts: Mapping[str, int], *, bias: bool) -> None:
        # Set before nn.Linear.__init__, which calls reset_parameters.
        self.parts, self.sizes = dict(parts), list(parts.values())
        super().__init__(in_features, sum(self.sizes), bias=bias)

    def reset_parameters(self) -> None:
        # Part by part, drawing as separate nn.Linear layers do: a seeded model (the demo's)
        # gets the same weights as before fusing.
        weights = self.weight.split(self.sizes)
        biases = self.bias.split(self.sizes) if self.bias is not None else [None] * len(weights)
        for weight, bias in zip(weights, biases):
            nn.Linear.reset_parameters(SimpleNamespace(weight=weight, bias=bias))  # type: ignore[arg-type]

    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        """The parts' outputs: views into the one GEMM's result."""
        return self(x).split(self.sizes, dim=-1)


def fuse_linears(owner: nn.Module, name: str, in_features: int, parts: Mapping[str, int], *,
                 bias: bool) -> FusedLinear:
    """Make ``owner.<name>`` a ``FusedLinear`` of ``parts``; ``owner``'s state dict keeps the parts' keys."""
    fused = FusedLinear(in_features, parts, bias=bias)
    owner.add_module(name, fused)
    fused.register_state_dict_post_hook(functools.partial(_save_parts, name=name))
    owner.register_load_state_dict_pre_hook(functools.partial(_load_parts, name=name))
    return fused


def _save_parts(fused: FusedLinear, state: dict, prefix: str, _metadata: object, *, name: str) -> None:
    if isinstance(state[prefix + "weight"], nn.Parameter):
        return  # keep_vars=True
    owner_prefix = prefix.removesuffix(f"{name}.")
    rows = {leaf: state.pop(prefix + leaf).split(fused.sizes) for leaf, _ in fused.named_parameters(recurse=False)}
    for index, part in enumerate(fused.parts):
        for leaf, pieces in rows.items():
            state[f"{owner_prefix}{part}.{leaf}"] = pieces[index]


def _load_parts(owner: nn.Module, state: dict, prefix: str, _metadata: object, _strict: bool,
                missing: list[str], unexpected: list[str], errors: list[str], *, name: str) -> None:
    fused = owner.get_submodule(name)
    for leaf, param in fused.named_parameters(recurse=False):
        fused_key, current = f"{prefix}{name}.{leaf}", param.detach().split(fused.sizes)
        if fused_key in state:  # not a key of this module's state dict
            unexpected.append(fused_key)
        pieces: list[Tensor | None] = []
        for part, rows in zip(fused.parts, current):
            key = f"{prefix}{part}.{leaf}"
            piece = state.pop(key, None)
            if piece is None:
                missing.append(key)
            elif piece.shape != rows.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {piece.shape} from "
                              f"checkpoint, the shape in current model is {rows.shape}.")
                piece = None
            pieces.append(piece)
        like = next((piece for piece in pieces if piece is not None), param)  # the checkpoint's dtype/device
        state[fused_key] = torch.cat(
            [rows.to(like) if piece is None else piece for piece, rows in zip(pieces, current)])
