"""Attention layers of the flow module.

``RelPositionAttention`` is the Transformer-XL style attention of the conformer encoder
(ESPnet "rel_selfattn" with the "rel_pos_espnet" encoding); ``SelfAttention`` is the plain
multi-head attention of the estimator's transformer blocks (diffusers' state-dict keys).
Both run on ``scaled_dot_product_attention`` so CUDA picks a fused kernel whose softmax
accumulates in fp32 even for half-precision inputs; on a GPU in half precision the estimator's
attention runs on ``kernels/chunk_attention.py`` instead, which computes its mask as it goes
(``estimator_mask``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.flow.masks import attention_mask
from a10tts.engine.flow.prefix import LayerPrefix
from a10tts.engine.fused_linear import fuse_linears
from a10tts.engine.kernels import in_front_of_halves
from a10tts.engine.kernels.chunk_attention import chunk_attention, chunk_attention_usable


def relative_position_encoding(
    length: int, dim: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Sinusoidal encodings of the offsets ``length-1, ..., 1, 0, -1, ..., -(length-1)``.

    Returns ``[1, 2*length-1, dim]`` with sin/cos interleaved on the feature axis, the same
    values ESPnet's table holds for these offsets (computed in fp32, then cast).
    """
    offsets = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / dim)
    )
    angles = offsets * inv_freq
    encoding = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
    return encoding.unsqueeze(0).to(dtype)


def _scores_by_key(scores_by_offset: Tensor) -> Tensor:
    """Re-index ``[..., T, 2T-1]`` scores from (query i, offset slot m) to (query i, key j).

    Slot m holds offset ``T-1-m`` and key j sits at offset ``i-j`` from query i, so the score of
    (i, j) lives in slot ``T-1-i+j``.
    """
    length = scores_by_offset.size(-2)
    position = torch.arange(length, device=scores_by_offset.device)
    slot = (length - 1 - position).unsqueeze(1) + position.unsqueeze(0)
    return scores_by_offset.gather(-1, slot.expand(*scores_by_offset.shape[:-1], length))


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with relative positions and the two learned biases u, v."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.head_dim))

    def forward(self, x: Tensor, position_encoding: Tensor, mask: Tensor) -> Tensor:
        """x ``[B, T, D]``, position_encoding ``[1, 2T-1, D]``, mask ``[B, 1|T, T]`` bool."""
        batch, length, _ = x.shape
        heads = (batch, length, self.num_heads, self.head_dim)
        q = self.linear_q(x).view(heads)
        k = self.linear_k(x).view(heads).transpose(1, 2)
        v = self.linear_v(x).view(heads).transpose(1, 2)
        p = self.linear_pos(position_encoding).view(1, -1, self.num_heads, self.head_dim).transpose(1, 2)

        # Content term (q+u)·k goes through SDPA; the position term (q+v)·p becomes its additive bias.
        content_q = (q + self.pos_bias_u).transpose(1, 2)
        position_q = (q + self.pos_bias_v).transpose(1, 2)
        position_scores = _scores_by_key(position_q @ p.transpose(-2, -1)) / math.sqrt(self.head_dim)
        bias = position_scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        out = F.scaled_dot_product_attention(content_q, k, v, attn_mask=bias)
        return self.linear_out(out.transpose(1, 2).reshape(batch, length, -1))


class SelfAttention(nn.Module):
    """Multi-head self-attention without q/k/v biases (one GEMM); the inner width may differ from ``dim``."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.to_qkv = fuse_linears(self, "to_qkv", dim, {"to_q": inner, "to_k": inner, "to_v": inner}, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])  # key "to_out.0", as in diffusers

    def forward(self, x: Tensor, mask: DenseMask | ChunkMask, prefix: LayerPrefix | None = None) -> Tensor:
        """x ``[B, T, D]``; mask: which keys each query sees (``estimator_mask``), counting the
        frames of ``prefix``, if any, in front of x's."""
        batch, length, _ = x.shape
        heads = (batch, length, self.num_heads, self.head_dim)
        q, k, v = (part.view(heads).transpose(1, 2) for part in self.to_qkv.split(x))
        out = mask.attend(q, k, v, None if prefix is None else prefix.past_keys_values(k, v))
        return self.to_out[0](out.transpose(1, 2).reshape(batch, length, -1))


def estimator_mask(valid: Tensor, chunk_size: int, streaming: bool | Tensor, prefix_frames: int,
                   like: Tensor, head_dim: int) -> DenseMask | ChunkMask:
    """``attention_mask(valid, chunk_size, streaming)`` after ``prefix_frames`` frames that every
    query sees, built once per estimator call for its attention layers, whose activations are
    like ``like``: for the kernel where it runs, else for SDPA. A prefix is whole chunks, so the
    call's chunks count from its own first frame."""
    if chunk_attention_usable(like, head_dim):
        return ChunkMask(valid, chunk_size, streaming)
    return DenseMask(valid, chunk_size, streaming, prefix_frames, like.dtype)


class DenseMask:
    """The mask as SDPA's additive bias ``[B, 1|T, P+T]``: 0 where a key is visible, -inf where
    not. Made once: SDPA would turn a bool mask into a bias in each of the 56 layers."""

    def __init__(self, valid: Tensor, chunk_size: int, streaming: bool | Tensor, prefix_frames: int,
                 dtype: torch.dtype) -> None:
        visible = attention_mask(valid, chunk_size, streaming)
        if prefix_frames:
            batch, frames = valid.shape
            visible = torch.cat([visible.new_ones(batch, frames, prefix_frames),
                                 visible.expand(-1, frames, -1)], dim=2)
        self.bias = torch.zeros_like(visible, dtype=dtype).masked_fill_(~visible, float("-inf"))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, past: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """q, k, v ``[B, H, T, d]``; ``past``: a prefix's keys and values, ``[2, H, P, d]`` each,
        one per half of the rows, put in front of theirs."""
        if past is not None:
            k, v = in_front_of_halves(past[0], k, dim=2), in_front_of_halves(past[1], v, dim=2)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias.unsqueeze(1))


class ChunkMask:
    """The mask as ``chunk_attention``'s per-row arguments; no host sync, so CUDA graphs can
    capture it."""

    def __init__(self, valid: Tensor, chunk_size: int, streaming: bool | Tensor) -> None:
        batch, frames = valid.shape
        self.chunk_size = chunk_size
        self.valid = valid.to(torch.int8).contiguous()  # the kernel reads it as [B, T] rows
        positions = torch.arange(1, frames + 1, device=valid.device, dtype=torch.int32)
        self.key_end = (self.valid * positions).amax(1).to(torch.int32)  # one past each row's last valid key
        if isinstance(streaming, Tensor):
            self.streaming = streaming.to(device=valid.device, dtype=torch.int32).expand(batch).contiguous()
        else:
            self.streaming = torch.full((batch,), int(streaming), dtype=torch.int32, device=valid.device)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, past: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return chunk_attention(q, k, v, self.valid, self.key_end, self.streaming, self.chunk_size, past)
