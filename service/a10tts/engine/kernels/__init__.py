"""GPU kernels (Triton), each with a torch reference it is tested against."""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import torch
from torch import Tensor

HAVE_TRITON = importlib.util.find_spec("triton") is not None  # CPU-only installs: the torch references serve


class LaunchConfig(NamedTuple):
    """A tiled kernel's launch: its tile (rows, and columns or keys, per program or loop step),
    warps and pipeline stages."""
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3


def runs_triton(x: Tensor) -> bool:
    """Whether a kernel may launch on ``x``: on CUDA, with Triton installed, and not while
    tracing for ONNX or compiling (both need the plain torch operations)."""
    return HAVE_TRITON and x.is_cuda and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


def in_front_of_halves(past: Tensor, x: Tensor, dim: int) -> Tensor:
    """``x`` ``[2B, ...]`` with ``past`` ``[2, ...]`` in front along ``dim``: ``past[0]`` before
    each of the first B rows, ``past[1]`` before each of the others (a guided call's conditional
    and unconditional halves). One copy; the torch reference of kernels that read a prefix in place."""
    halves = x.view(2, x.size(0) // 2, *x.shape[1:])
    joined = torch.cat([past.unsqueeze(1).expand(2, halves.size(1), *past.shape[1:]), halves], dim=dim + 1)
    return joined.view(x.size(0), *joined.shape[2:])
