"""Decode attention over the slot KV cache: one new query token per slot, GQA, in place.

Each program handles one (row, KV head) pair: the query heads that share the KV head are
stacked into a small matrix so the scores are one `tl.dot` per key block, and the loop over
the slot's keys stops at the slot's length (read from device memory, so CUDA graphs can
replay the kernel for any lengths). Online softmax in fp32.
"""

from __future__ import annotations


import torch
from torch import Tensor

from a10tts.engine.kernels import HAVE_TRITON

if HAVE_TRITON:
    import triton
    import triton.language as tl


def decode_attention(q: Tensor, keys: Tensor, values: Tensor, slots: Tensor, lengths: Tensor, scale: float) -> Tensor:
    """q ``[B, H, D]``; keys/values ``[S, T, KVH, D]``; row b attends to ``keys[slots[b], :lengths[b]]``.

    Returns ``[B, H, D]`` in q's dtype.
    """
    if q.is_cuda and HAVE_TRITON:
        return _decode_attention_triton(q, keys, values, slots, lengths, scale)
    return decode_attention_reference(q, keys, values, slots, lengths, scale)


def decode_attention_reference(q: Tensor, keys: Tensor, values: Tensor, slots: Tensor, lengths: Tensor,
                               scale: float) -> Tensor:
    """Plain torch: masked attention over each slot's whole capacity (host-sync free too)."""
    batch, heads, head_dim = q.shape
    kv_heads = keys.shape[2]
    k = keys[slots].float()  # [B, T, KVH, D]
    v = values[slots].float()
    group = heads // kv_heads
    qg = q.float().view(batch, kv_heads, group, head_dim)
    scores = torch.einsum("bkgd,btkd->bkgt", qg, k) * scale
    visible = torch.arange(k.shape[1], device=q.device)[None, :] < lengths[:, None]  # [B, T]
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    out = torch.einsum("bkgt,btkd->bkgd", scores.softmax(-1), v)
    return out.reshape(batch, heads, head_dim).to(q.dtype)


if HAVE_TRITON:

    @triton.jit
    def _decode_kernel(
        Q, K, V, Slots, Lengths, Out, scale,
        stride_qb, stride_qh,
        stride_ks, stride_kt, stride_kh,
        stride_vs, stride_vt, stride_vh,
        stride_ob, stride_oh,
        GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
        IEEE: tl.constexpr,
    ):
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        scale = scale.to(tl.float32)  # under torch.compile a Python float may arrive as fp64
        slot = tl.load(Slots + row)
        length = tl.load(Lengths + row)
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, HEAD_DIM)
        heads = kv_head * GROUP + g
        q = tl.load(Q + row * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=(g < GROUP)[:, None], other=0.0)

        m = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
        k_base = K + slot * stride_ks + kv_head * stride_kh
        v_base = V + slot * stride_vs + kv_head * stride_vh
        for start in range(0, length, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            valid = n < length
            k = tl.load(k_base + n[:, None] * stride_kt + d[None, :], mask=valid[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
            else:
                s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m - m_new)
            v = tl.load(v_base + n[:, None] * stride_vt + d[None, :], mask=valid[:, None], other=0.0)
            if IEEE:
                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            l = l * alpha + tl.sum(p, 1)
            m = m_new
        out = acc / l[:, None]
        tl.store(Out + row * stride_ob + heads[:, None] * stride_oh + d[None, :], out.to(Out.dtype.element_ty),
                 mask=(g < GROUP)[:, None])


# Opaque to torch.compile: the compiled decode step fuses everything around this call, and the
# kernel launches as written (dynamo's tracing of user kernels is not needed for that).
@torch.compiler.disable
def _decode_attention_triton(q: Tensor, keys: Tensor, values: Tensor, slots: Tensor, lengths: Tensor,
                             scale: float) -> Tensor:
    batch, heads, head_dim = q.shape
    kv_heads = keys.shape[2]
    group = heads // kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    _decode_kernel[(batch, kv_heads)](
        q, keys, values, slots, lengths, out, scale,
        q.stride(0), q.stride(1),
        keys.stride(0), keys.stride(1), keys.stride(2),
        values.stride(0), values.stride(1), values.stride(2),
        out.stride(0), out.stride(1),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, BLOCK_N=64,
        IEEE=q.dtype == torch.float32,
    )
    return out
