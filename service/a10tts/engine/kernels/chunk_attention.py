"""The flow estimator's self-attention with its masks computed in the kernel (Triton).

Each query sees the keys of a voice prefix (if any), then the call's own frames that are valid,
and for a streaming row only those before the end of the query's chunk. SDPA needed that as a
dense additive bias: at a loaded Euler step (32 requests x 650 frames, the CFG batch of 64) it
read a [64, 650, 650] bias for each of the 56 layers and ran over every masked block; attention
was 38 % of the step on an H100. Here each program stops its loop over keys where the last
query of its block stops seeing them (the row's last valid frame, or its chunk's end), and reads
only a per-key valid flag. A voice prefix's keys and values are read where they lie, one copy
for every row of its half of the batch: joining them in front of each row's own took two copies
per layer, 112 kernels per Euler step. Online softmax in fp32, as SDPA's fused kernels do.

Off CUDA, in fp32, while tracing for ONNX or compiling, callers use SDPA with the dense mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from a10tts.engine.kernels import HAVE_TRITON, LaunchConfig, runs_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl


# 64 queries per program, 64 keys per loop step: the fastest of ten configurations on an H100 at
# the served shapes, with the prefix read in place (benchmarks/chunk_attention.py; docs/benchmarks.md)
DEFAULT_CONFIG = LaunchConfig()


def chunk_attention_usable(x: Tensor, head_dim: int) -> bool:
    """Whether ``chunk_attention`` can run on tensors like ``x``."""
    return runs_triton(x) and x.dtype in (torch.float16, torch.bfloat16) and head_dim in (16, 32, 64, 128)


def chunk_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, key_end: Tensor, streaming: Tensor,
                    chunk_size: int, past: tuple[Tensor, Tensor] | None = None,
                    config: LaunchConfig = DEFAULT_CONFIG) -> Tensor:
    """Softmax attention of q ``[B, H, T, d]`` over k, v ``[B, H, T, d]``, after the keys and
    values of a prefix, ``past`` ``[2, H, P, d]`` each (one per half of the rows: a guided call's
    conditional and unconditional rows), which every query sees. The prefix is read where it
    lies: no copy of it goes in front of each row's keys.

    Of the call's own keys, query i of row b sees key j when ``valid[b, j]`` (``[B, T]`` int8) and,
    if ``streaming[b]`` (``[B]`` int32) and ``chunk_size > 0``, ``j < (i // chunk_size + 1) *
    chunk_size``. ``key_end`` (``[B]`` int32) is one past each row's last valid key: no key at or
    after it is read. Returns ``[B, H, T, d]`` laid out as ``[B, T, H, d]`` (as SDPA's are), so
    that joining the heads is a view, not a copy. A query that sees no key gets zeros.
    """
    batch, heads, frames, head_dim = q.shape
    if past is not None and batch % 2:
        raise ValueError(f"a prefix goes in front of the two halves of a guided batch; got {batch} rows")
    past_k, past_v = past if past is not None else (k, v)
    out = torch.empty(batch, frames, heads, head_dim, dtype=q.dtype, device=q.device).transpose(1, 2)
    grid = (triton.cdiv(frames, config.block_m), batch * heads)
    _chunk_attention_kernel[grid](
        q, k, v, past_k, past_v, valid, key_end, streaming, out, head_dim ** -0.5,
        *q.stride(), *k.stride(), *v.stride(), *past_k.stride(), *past_v.stride(), *out.stride(),
        heads, frames, past_k.size(2) if past is not None else 0, max(batch // 2, 1),
        chunk_size if chunk_size > 0 else frames,
        HEAD_DIM=head_dim, HAS_PAST=past is not None, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


if HAVE_TRITON:

    @triton.jit
    def _attend_block(q, k_base, v_base, n, d, skt, skd, svt, svd, inside, visible, m, total, acc, scale):
        """Keys ``n`` (those ``inside`` the range) into the online softmax of the queries that see
        them (``visible``): the running max, sum and weighted values."""
        k = tl.load(k_base + n[None, :] * skt + d[:, None] * skd, mask=inside[None, :], other=0.0)
        v = tl.load(v_base + n[:, None] * svt + d[None, :] * svd, mask=inside[:, None], other=0.0)
        s = tl.where(visible, tl.dot(q, k) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key seen yet: keep exp2 finite
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m - m_safe)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        return m_new, total * alpha + tl.sum(p, 1), acc

    # Not specialized on the sizes that vary per call (Triton compiles a variant per value class:
    # 1, multiples of 16, others): each variant's first use compiled for ~1.5 s inside a served
    # decode step, a stall for every request waiting on it (docs/benchmarks.md).
    @triton.jit(do_not_specialize=["frames", "prefix", "half_rows", "chunk"])
    def _chunk_attention_kernel(
        Q, K, V, PastK, PastV, Valid, KeyEnd, Streaming, Out, scale,
        sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd,
        spkb, spkh, spkt, spkd, spvb, spvh, spvt, spvd, sob, soh, sot, sod,
        heads, frames, prefix, half_rows, chunk,
        HEAD_DIM: tl.constexpr, HAS_PAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        block = tl.program_id(0)
        row = tl.program_id(1) // heads
        head = tl.program_id(1) % heads
        i = block * BLOCK_M + tl.arange(0, BLOCK_M)
        d = tl.arange(0, HEAD_DIM)
        q = tl.load(Q + row * sqb + head * sqh + i[:, None] * sqt + d[None, :] * sqd,
                    mask=(i < frames)[:, None], other=0.0)
        scale = scale.to(tl.float32) * 1.4426950408889634  # log2(e) folded in: exp2 below

        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        if HAS_PAST:  # every query sees all of the prefix of its half of the rows
            half = row // half_rows
            k_base = PastK + half * spkb + head * spkh
            v_base = PastV + half * spvb + head * spvh
            for start in range(0, prefix, BLOCK_N):
                n = start + tl.arange(0, BLOCK_N)
                inside = n < prefix
                m, total, acc = _attend_block(q, k_base, v_base, n, d, spkt, spkd, spvt, spvd, inside,
                                              inside[None, :], m, total, acc, scale)

        # The call's own keys, up to the last one any query of this block sees
        streaming = tl.load(Streaming + row) != 0
        last_query = tl.minimum(block * BLOCK_M + BLOCK_M, frames) - 1
        end = tl.load(KeyEnd + row)
        if streaming:
            end = tl.minimum(end, (last_query // chunk + 1) * chunk)
        sees_until = tl.where(streaming, (i // chunk + 1) * chunk, frames)  # per query
        k_base = K + row * skb + head * skh
        v_base = V + row * svb + head * svh
        for start in range(0, end, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            inside = n < end
            key_valid = tl.load(Valid + row * frames + n, mask=inside, other=0) != 0
            visible = key_valid[None, :] & (n[None, :] < sees_until[:, None])
            m, total, acc = _attend_block(q, k_base, v_base, n, d, skt, skd, svt, svd, inside, visible,
                                          m, total, acc, scale)
        out = acc / tl.where(total == 0.0, 1.0, total)[:, None]
        tl.store(Out + row * sob + head * soh + i[:, None] * sot + d[None, :] * sod, out.to(Out.dtype.element_ty),
                 mask=(i < frames)[:, None])
