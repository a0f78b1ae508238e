"""LayerNorm over the last dimension, optionally after adding a residual, in one pass (Triton).

The flow estimator normalizes 256-wide rows ~140 times per Euler step. torch's kernel took
~20 us a call on a loaded step (32 x 450 rows) on an H100, 15 % of the step; this one
normalizes a block of rows per program, and in the transformer blocks it adds the residual in
the same pass, so no separate add kernel writes the sum and the norm reads it back
(``benchmarks/flow_profile.py``). Statistics in fp32, the sum rounded to the input's dtype
before normalizing, as torch's add followed by ``layer_norm`` does.

Off CUDA, without Triton, while tracing for ONNX or compiling, plain torch does the same work.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: plain torch serves
    triton = None

_ROWS_PER_PROGRAM = 16


def layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """``norm(x)``."""
    if not _use_triton(x, norm):
        return norm(x)
    return _launch(x, None, norm)[1]


def add_layer_norm(x: Tensor, delta: Tensor, norm: nn.LayerNorm) -> tuple[Tensor, Tensor]:
    """``(x + delta, norm(x + delta))``."""
    if not _use_triton(x, norm) or delta.shape != x.shape or delta.dtype != x.dtype:
        total = x + delta
        return total, norm(total)
    return _launch(x, delta, norm)


def _use_triton(x: Tensor, norm: nn.LayerNorm) -> bool:
    return (triton is not None and x.is_cuda and len(norm.normalized_shape) == 1 and norm.weight is not None
            and norm.bias is not None and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _launch(x: Tensor, delta: Tensor | None, norm: nn.LayerNorm) -> tuple[Tensor, Tensor]:
    width = x.size(-1)
    rows = x.numel() // width
    x = x.contiguous()
    total = torch.empty_like(x) if delta is not None else x
    out = torch.empty_like(x)
    grid = (triton.cdiv(rows, _ROWS_PER_PROGRAM),)
    _layer_norm_kernel[grid](
        x, x if delta is None else delta.contiguous(), norm.weight, norm.bias, total, out, rows, width, norm.eps,
        BLOCK_ROWS=_ROWS_PER_PROGRAM, BLOCK_N=triton.next_power_of_2(width), HAS_DELTA=delta is not None,
    )
    return total, out


if triton is not None:

    @triton.jit
    def _layer_norm_kernel(X, Delta, W, B, Total, Out, rows, width, eps,
                           BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DELTA: tl.constexpr):
        row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]
        col = tl.arange(0, BLOCK_N)[None, :]
        inside = (row < rows) & (col < width)
        at = row * width + col
        x = tl.load(X + at, mask=inside, other=0.0)
        if HAS_DELTA:
            x = x + tl.load(Delta + at, mask=inside, other=0.0)  # in the input dtype, as torch adds
            tl.store(Total + at, x, mask=inside)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=1) / width
        centered = tl.where(inside, x - mean[:, None], 0.0)
        variance = tl.sum(centered * centered, axis=1) / width
        weight = tl.load(W + col, mask=col < width, other=0.0).to(tl.float32)
        bias = tl.load(B + col, mask=col < width, other=0.0).to(tl.float32)
        y = centered * tl.rsqrt(variance + eps)[:, None] * weight + bias
        tl.store(Out + at, y.to(Out.dtype.element_ty), mask=inside)
