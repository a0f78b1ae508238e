"""GPU kernels (Triton), each with a torch reference it is tested against."""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

HAVE_TRITON = importlib.util.find_spec("triton") is not None  # CPU-only installs: the torch references serve


def runs_triton(x: Tensor) -> bool:
    """Whether a kernel may launch on ``x``: on CUDA, with Triton installed, and not while
    tracing for ONNX or compiling (both need the plain torch operations)."""
    return HAVE_TRITON and x.is_cuda and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
