"""Rotary position embedding of an attention layer's queries and keys, in one pass (Triton).

The LM rotates q and k with the rotate-half convention in fp32. In torch that is seven kernels
each (cast, the halves' negation and concatenation, two products, the sum, the cast back): 14 of
a prefill layer's ~56 launches. Here one kernel rotates every query and key head of every token
in place, in the q/k/v projection's output, with torch's roundings (fp32 products and sum, one
rounding to the activations' dtype).

Off CUDA, without Triton, while tracing for ONNX or compiling, plain torch does the same work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from a10tts.engine.kernels import HAVE_TRITON, runs_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

_HEADS_PER_PROGRAM = 4


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[N, heads, head_dim]`` by its tokens' angles (computed in fp32)."""
    x32 = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


def rotary_qkv(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int, num_kv_heads: int,
               head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split the projection ``qkv`` ``[N, (num_heads + 2 * num_kv_heads) * head_dim]`` into
    ``q`` ``[N, num_heads, head_dim]``, ``k`` and ``v`` ``[N, num_kv_heads, head_dim]``, with q
    and k rotated by the fp32 tables ``cos``/``sin`` ``[N, head_dim]``."""
    tokens = qkv.shape[0]
    q, k, v = qkv.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    q, k = q.view(tokens, num_heads, head_dim), k.view(tokens, num_kv_heads, head_dim)
    v = v.view(tokens, num_kv_heads, head_dim)
    if not (runs_triton(qkv) and qkv.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()):
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v
    rotated_heads, half = num_heads + num_kv_heads, head_dim // 2
    grid = (tokens, triton.cdiv(rotated_heads, _HEADS_PER_PROGRAM))
    _rotary_kernel[grid](qkv, cos, sin, qkv.stride(0), cos.stride(0), rotated_heads, half,
                         BLOCK_H=_HEADS_PER_PROGRAM, BLOCK_HALF=triton.next_power_of_2(half))
    return q, k, v


if HAVE_TRITON:

    @triton.jit
    def _rotary_kernel(X, Cos, Sin, stride_token, stride_angle, rotated_heads, half,
                       BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
        token = tl.program_id(0)
        head = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
        col = tl.arange(0, BLOCK_HALF)[None, :]
        inside = (head < rotated_heads) & (col < half)
        first = X + token * stride_token + head * 2 * half + col  # the heads' first halves
        x1 = tl.load(first, mask=inside, other=0.0)
        x2 = tl.load(first + half, mask=inside, other=0.0)
        angle = token * stride_angle + col
        cos1, sin1 = tl.load(Cos + angle, mask=col < half), tl.load(Sin + angle, mask=col < half)
        cos2, sin2 = tl.load(Cos + angle + half, mask=col < half), tl.load(Sin + angle + half, mask=col < half)
        a, b = x1.to(tl.float32), x2.to(tl.float32)
        tl.store(first, (a * cos1 + -b * sin1).to(x1.dtype), mask=inside)
        tl.store(first + half, (b * cos2 + a * sin2).to(x1.dtype), mask=inside)
