"""RMSNorm over the last dimension, optionally after adding a residual, in one pass (Triton).

The LM normalizes every token twice per layer. In torch that is eight kernels a norm (the fp32
cast, square, mean, add, rsqrt, scale, cast back, weight) plus the residual add before it: ~400
of the ~1,350 launches of an uncompiled prefill. Here each norm is one
kernel, and the decoder layers add the residual in the same pass. The roundings are torch's:
the sum in the input's dtype, the statistics in fp32, the normalized row rounded to the input's
dtype before the weight multiplies it (Hugging Face's Qwen2 order).

Off CUDA, without Triton, while tracing for ONNX or compiling (where torch.compile fuses the
plain operations itself), plain torch does the same work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from a10tts.engine.kernels import HAVE_TRITON, runs_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from a10tts.engine.kernels.layer_norm import rows_after_add

_ROWS_PER_PROGRAM = 4


def rms_norm_reference(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    x32 = x.float()  # the mean of squares overflows/underflows in half precision
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm of ``x``'s rows with the learned ``weight``."""
    if not _use_triton(x, x, weight):
        return rms_norm_reference(x, weight, eps)
    return _launch(x, None, weight, eps)[1]


def add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(x + delta, rms_norm(x + delta))``."""
    if not _use_triton(x, delta, weight):
        total = x + delta
        return total, rms_norm_reference(total, weight, eps)
    return _launch(x, delta, weight, eps)


def _use_triton(x: Tensor, delta: Tensor, weight: Tensor) -> bool:
    return runs_triton(x) and delta.shape == x.shape and delta.dtype == x.dtype == weight.dtype


def _launch(x: Tensor, delta: Tensor | None, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    width = x.size(-1)
    rows = x.numel() // width
    x = x.contiguous()
    total = x if delta is None else torch.empty_like(x)
    out = torch.empty_like(x)
    grid = (triton.cdiv(rows, _ROWS_PER_PROGRAM),)
    _rms_norm_kernel[grid](x, x if delta is None else delta.contiguous(), weight, total, out, rows, width, eps,
                           BLOCK_ROWS=_ROWS_PER_PROGRAM, BLOCK_N=triton.next_power_of_2(width),
                           HAS_DELTA=delta is not None)
    return total, out


if HAVE_TRITON:

    # Not specialized on the rows (Triton compiles a variant per value class: 1, multiples of 16,
    # others): an eager prefill's token count is any number, and a variant's first use would
    # compile inside a served LM step (see chunk_attention).
    @triton.jit(do_not_specialize=["rows"])
    def _rms_norm_kernel(X, Delta, W, Total, Out, rows, width, eps,
                         BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DELTA: tl.constexpr):
        x, _, col, inside, at = rows_after_add(X, Delta, Total, rows, width, BLOCK_ROWS, BLOCK_N, HAS_DELTA)
        x32 = x.to(tl.float32)
        normed = x32 * tl.rsqrt(tl.sum(x32 * x32, axis=1) / width + eps)[:, None]
        weight = tl.load(W + col, mask=col < width, other=0.0)
        y = weight.to(tl.float32) * normed.to(x.dtype).to(tl.float32)
        tl.store(Out + at, y.to(Out.dtype.element_ty), mask=inside)
