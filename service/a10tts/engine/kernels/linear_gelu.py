"""The estimator's feed-forward Linear with its GELU in the same kernel, for a few rows (Triton).

A stream's first chunk runs the flow estimator on ~100 rows (its CFG pair of ~50 frames after
the voice prefix), ten times, and each Euler step is bound by its ~600 kernels, not by their
work. Each transformer block's feed-forward was a cuBLAS GEMM, then torch's GELU over its
1,024-wide output: 4.6-4.8 us for the two at 112 rows on an H200. Here one program per 16- or
64-row by 64-column output tile computes the GEMM and applies the exact (erf) GELU, as upstream's
``nn.GELU()``, before its one store: 2.8-2.9 us. Up to ``FEW_ROWS`` rows it wins; at a loaded step's
rows cuBLAS's GEMM is the faster even against both passes (41,600 rows: 103-114 us fused, 102 us
apart). The step's other Linears, in this form, lost more than they won against cuBLAS, so they
stay there (``benchmarks/linear_gelu.py``; ``docs/benchmarks.md``).

The roundings are torch's: fp32 accumulation plus the bias rounded to the input's dtype, then
GELU in fp32 on that. Off CUDA, without Triton, while tracing for ONNX or compiling, and above
``FEW_ROWS``, plain torch does the work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.kernels import HAVE_TRITON, LaunchConfig, runs_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

FEW_ROWS = 2048  # above: cuBLAS and torch's GELU (4,096 rows: 12.9 us, fused 13.9 on an H200)
BLOCK_K = 64  # the input's width must be a multiple


# Rows by 64 output columns per program: the fastest measured on an H200 at the feed-forward's
# 256 -> 1,024 (benchmarks/linear_gelu.py)
TILES_UP_TO_256_ROWS = LaunchConfig(block_m=16)
TILES_MORE_ROWS = LaunchConfig(block_m=64)


def linear_gelu(x: Tensor, layer: nn.Linear, config: LaunchConfig | None = None) -> Tensor:
    """``gelu(layer(x))``, the exact GELU. A ``config`` runs the kernel at any row count (benchmarks)."""
    if not _usable(x, layer.weight, FEW_ROWS if config is None else None):
        return F.gelu(layer(x))
    rows, (n_out, n_in) = x.numel() // x.size(-1), layer.weight.shape
    if config is None:
        config = TILES_UP_TO_256_ROWS if rows <= 256 else TILES_MORE_ROWS
    x2 = x.reshape(rows, n_in)
    if x2.stride(1) != 1 or x2.stride(0) != n_in:
        x2 = x2.contiguous()
    weight = layer.weight.contiguous()
    out = torch.empty(*x.shape[:-1], n_out, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(rows, config.block_m), triton.cdiv(n_out, config.block_n))
    _linear_gelu_kernel[grid](
        x2, weight, layer.bias if layer.bias is not None else weight, out, rows, n_out, n_in,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=BLOCK_K, HAS_BIAS=layer.bias is not None,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def _usable(x: Tensor, weight: Tensor, most_rows: int | None) -> bool:
    if not (runs_triton(x) and x.dtype in (torch.float16, torch.bfloat16) and weight.dtype == x.dtype):
        return False  # first: while tracing, sizes are tensors
    rows = x.numel() // x.size(-1) if x.size(-1) else 0
    return x.size(-1) % BLOCK_K == 0 and 0 < rows and (most_rows is None or rows <= most_rows)


if HAVE_TRITON:

    # Not specialized on the row count, which varies per call (each value class compiles a variant)
    @triton.jit(do_not_specialize=["rows"])
    def _linear_gelu_kernel(X, W, Bias, Out, rows, n_out, n_in,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            HAS_BIAS: tl.constexpr):
        """``X`` ``[rows, n_in]`` times ``W`` ``[n_out, n_in]`` (nn.Linear's layout) transposed,
        plus ``Bias``, then GELU: ``Out`` ``[rows, n_out]``."""
        row = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        col = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = tl.arange(0, BLOCK_K)
        row_in, col_in = row < rows, col < n_out
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, n_in, BLOCK_K):
            a = tl.load(X + row[:, None] * n_in + (start + k)[None, :], mask=row_in[:, None], other=0.0)
            b = tl.load(W + col[None, :] * n_in + (start + k)[:, None], mask=col_in[None, :], other=0.0)
            acc = tl.dot(a, b, acc)
        if HAS_BIAS:
            acc += tl.load(Bias + col, mask=col_in, other=0.0).to(tl.float32)[None, :]
        y = acc.to(Out.dtype.element_ty).to(tl.float32)  # the Linear's output, rounded as cuBLAS rounds it
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
        tl.store(Out + row[:, None] * n_out + col[None, :], y.to(Out.dtype.element_ty),
                 mask=row_in[:, None] & col_in[None, :])
