"""LayerNorm over the last dimension, optionally after adding a residual or followed by Mish and
a per-sequence vector, in one pass (Triton).

The flow estimator normalizes 256-wide rows ~140 times per Euler step. torch's kernel took
~20 us a call on a loaded step (32 x 450 rows) on an H100, 15 % of the step; this one
normalizes a block of rows per program, and in the transformer blocks it adds the residual in
the same pass, so no separate add kernel writes the sum and the norm reads it back
(``benchmarks/flow_profile.py``). Statistics in fp32, the sum rounded to the input's dtype
before normalizing, as torch's add followed by ``layer_norm`` does. The conv blocks' norm, Mish,
time-embedding add and the resnets' residual run as one pass too (``layer_norm_mish``), in fp32
until the one rounding.

Off CUDA, without Triton, while tracing for ONNX or compiling, plain torch does the same work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.kernels import HAVE_TRITON, runs_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

_ROWS_PER_PROGRAM = 16


def layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """``norm(x)``."""
    if not _use_triton(x, norm):
        return norm(x)
    return _launch(x, None, norm)[1]


def layer_norm_mish(x: Tensor, norm: nn.LayerNorm, add: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """``mish(norm(x))`` for ``x`` ``[B, T, C]``, plus ``add`` ``[B, C]`` on every frame of each
    row, plus ``residual`` ``[B, T, C]``."""
    if (not _use_triton(x, norm) or (add is not None and add.shape != (x.size(0), x.size(-1)))
            or (residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype))):
        out = F.mish(norm(x))
        out = out if add is None else out + add.unsqueeze(1)
        return out if residual is None else out + residual
    return _launch(x, None, norm, mish=True, row_add=add, residual=residual)[1]


def add_layer_norm(x: Tensor, delta: Tensor, norm: nn.LayerNorm) -> tuple[Tensor, Tensor]:
    """``(x + delta, norm(x + delta))``."""
    if not _use_triton(x, norm) or delta.shape != x.shape or delta.dtype != x.dtype:
        total = x + delta
        return total, norm(total)
    return _launch(x, delta, norm)


def _use_triton(x: Tensor, norm: nn.LayerNorm) -> bool:
    return runs_triton(x) and len(norm.normalized_shape) == 1 and norm.weight is not None and norm.bias is not None


def _launch(x: Tensor, delta: Tensor | None, norm: nn.LayerNorm, mish: bool = False,
            row_add: Tensor | None = None, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    width = x.size(-1)
    rows = x.numel() // width
    x = x.contiguous()
    total = torch.empty_like(x) if delta is not None else x
    out = torch.empty_like(x)
    if row_add is not None and row_add.stride(-1) != 1:
        row_add = row_add.contiguous()  # rows may lie apart (a view into all resnets' time projections), not columns
    grid = (triton.cdiv(rows, _ROWS_PER_PROGRAM),)
    _layer_norm_kernel[grid](
        x, x if delta is None else delta.contiguous(), norm.weight, norm.bias, total, out,
        x if row_add is None else row_add, x if residual is None else residual.contiguous(),
        rows, width, max(rows // max(x.size(0), 1), 1), width if row_add is None else row_add.stride(0), norm.eps,
        BLOCK_ROWS=_ROWS_PER_PROGRAM, BLOCK_N=triton.next_power_of_2(width), HAS_DELTA=delta is not None,
        MISH=mish, HAS_ROW_ADD=row_add is not None, HAS_RESIDUAL=residual is not None,
    )
    return total, out


if HAVE_TRITON:

    @triton.jit
    def rows_after_add(X, Delta, Total, rows, width,
                       BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DELTA: tl.constexpr):
        """This program's block of rows of ``X`` ``[rows, width]``, plus ``Delta``'s if it has
        one (the sum stored to ``Total``): the values, their rows, columns, in-bounds mask and
        offsets. Shared with ``rms_norm``."""
        row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]
        col = tl.arange(0, BLOCK_N)[None, :]
        inside = (row < rows) & (col < width)
        at = row * width + col
        x = tl.load(X + at, mask=inside, other=0.0)
        if HAS_DELTA:
            x = x + tl.load(Delta + at, mask=inside, other=0.0)  # in the input dtype, as torch adds
            tl.store(Total + at, x, mask=inside)
        return x, row, col, inside, at

    @triton.jit
    def _layer_norm_kernel(X, Delta, W, B, Total, Out, RowAdd, Residual, rows, width, rows_per_sequence,
                           row_add_stride, eps,
                           BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DELTA: tl.constexpr,
                           MISH: tl.constexpr, HAS_ROW_ADD: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
        x, row, col, inside, at = rows_after_add(X, Delta, Total, rows, width, BLOCK_ROWS, BLOCK_N, HAS_DELTA)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=1) / width
        centered = tl.where(inside, x - mean[:, None], 0.0)
        variance = tl.sum(centered * centered, axis=1) / width
        weight = tl.load(W + col, mask=col < width, other=0.0).to(tl.float32)
        bias = tl.load(B + col, mask=col < width, other=0.0).to(tl.float32)
        y = centered * tl.rsqrt(variance + eps)[:, None] * weight + bias
        if MISH:  # y * tanh(softplus(y)) = y * n / (n + 2), n = e^y (e^y + 2); y past softplus's threshold: y
            e = tl.exp(tl.minimum(y, 20.0))
            n = e * (e + 2.0)
            y = tl.where(y > 20.0, y, y * n / (n + 2.0))
        if HAS_ROW_ADD:
            y = y + tl.load(RowAdd + (row // rows_per_sequence) * row_add_stride + col, mask=inside, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            y = y + tl.load(Residual + at, mask=inside, other=0.0).to(tl.float32)
        tl.store(Out + at, y.to(Out.dtype.element_ty), mask=inside)
