"""The flow-matching estimator: a causal, conditional 1-D U-Net with transformer blocks.

Given the noisy mel ``x``, the encoder output ``mu``, the speaker vector, the prompt-mel
condition and the ODE time ``t``, it predicts the velocity ``dx/dt``. Parameter names follow
upstream's ``CausalConditionalDecoder`` (built on Matcha-TTS / diffusers blocks).
CosyVoice2 uses a single U-Net level, so "down" and "up" keep the frame rate; only the skip
connection and the layer layout remain of the U shape.

Activations run frames-last (``[B, T, C]``) from the input to the output: the norms, attention
and feed-forward layers take them so, and the convolutions run as GEMMs over each frame's window.
Upstream's channels-first layout costs a transposing copy around every norm of every conv block
and a layout change inside every cuDNN convolution: with it, copies took 4.8 of a loaded Euler
step's 21 ms on an H100, 1.3 ms now (``docs/benchmarks.md``, "The flow estimator's layout").

Only the output is masked. Upstream zeroes the padded frames before and after every convolution,
~80 element-wise passes per call, but padding only ever follows a row's valid frames, every
layer but attention works frame by frame or looks left, and attention hides padded keys: what
padded frames hold never reaches a valid frame, whose result is the same without the passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.hparams import check_supported, require
from a10tts.engine.flow.attention import ChunkMask, DenseMask, SelfAttention, estimator_mask
from a10tts.engine.flow.prefix import LayerPrefix
from a10tts.engine.fused_linear import fuse_linears
from a10tts.engine.kernels.conv_windows import causal_windows
from a10tts.engine.kernels.layer_norm import add_layer_norm, layer_norm, layer_norm_mish
from a10tts.engine.kernels.linear_gelu import linear_gelu


def timestep_features(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal features of the ODE time ``t`` ``[B]`` -> ``[B, dim]`` in fp32 (sin half, cos half)."""
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32)
    inv_freq = torch.exp(exponent * -(math.log(10000) / (half - 1)))
    angles = scale * t.float().unsqueeze(1) * inv_freq.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(features)))


class CausalConv1d(nn.Conv1d):
    """A convolution over frames-last ``[B, T, C]`` padded on the left only, so frame t never
    depends on later frames; upstream's ``Conv1d`` parameters, one GEMM over each frame's window."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        # Upstream's [out, in, kernel] shape over [out, kernel, in] memory (loading a checkpoint
        # and casting keep the strides): the GEMM's weight is then a view, where a contiguous
        # parameter was copied on every call, 31 kernels of each Euler step.
        self.weight = nn.Parameter(self.weight.detach().permute(0, 2, 1).contiguous().permute(0, 2, 1))

    def forward(self, x: Tensor, prefix: LayerPrefix | None = None) -> Tensor:
        size = self.kernel_size[0]
        windows = causal_windows(x, size, None if prefix is None else prefix.conv_context(x, size - 1))
        return F.linear(windows, self.weight.permute(0, 2, 1).reshape(self.out_channels, -1), self.bias)


class Pointwise(nn.Conv1d):
    """A 1x1 convolution over frames-last ``[B, T, C]``: upstream's ``Conv1d`` parameters."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight[:, :, 0], self.bias)


class CausalConvBlock(nn.Module):
    """Causal conv -> LayerNorm over channels -> Mish (-> + a vector per sequence, + a residual)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        # Keys "block.0"/"block.2": upstream's Sequential has parameter-free transposes in slots 1 and 3.
        self.block = nn.ModuleDict({"0": CausalConv1d(dim, dim_out, 3), "2": nn.LayerNorm(dim_out)})

    def forward(self, x: Tensor, prefix: LayerPrefix | None = None, add: Tensor | None = None,
                residual: Tensor | None = None) -> Tensor:
        """x ``[B, T, C]``; add ``[B, C]``; residual like the output."""
        return layer_norm_mish(self.block["0"](x, prefix), self.block["2"], add, residual)


class CausalResnetBlock(nn.Module):
    """Two conv blocks with a projection of the time embedding added in between, plus a 1x1
    residual path. Upstream's ``mlp`` (Mish, then a Linear) of every resnet block runs as one
    GEMM in the estimator (``CausalConditionalDecoder.time_projections``)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block1 = CausalConvBlock(dim, dim_out)
        self.block2 = CausalConvBlock(dim_out, dim_out)
        self.res_conv = Pointwise(dim, dim_out)

    def forward(self, x: Tensor, time_add: Tensor, prefix: LayerPrefix | None = None) -> Tensor:
        """time_add ``[B, dim_out]``: this block's projection of the time embedding."""
        h = self.block1(x, prefix, add=time_add)
        return self.block2(h, prefix, residual=self.res_conv(x))


class GeluProjection(nn.Module):
    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return linear_gelu(x, self.proj)


class GeluFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        # Keys "net.0.proj"/"net.2": diffusers' FeedForward keeps a dropout in slot 1.
        self.net = nn.ModuleDict({"0": GeluProjection(dim, hidden), "2": nn.Linear(hidden, dim)})

    def forward(self, x: Tensor) -> Tensor:
        return self.net["2"](self.net["0"](x))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward (x4 width), diffusers' parameter names."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, num_heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GeluFeedForward(dim, 4 * dim)

    def forward(self, x: Tensor, normed: Tensor, mask: DenseMask | ChunkMask, prefix: LayerPrefix | None = None,
                next_norm: nn.LayerNorm | None = None) -> tuple[Tensor, Tensor | None]:
        """x: the residual stream, ``normed``: ``norm1(x)``. Returns the new stream and, given the
        next block's first norm, that norm of it: the residual add and the norm in one pass."""
        x, h = add_layer_norm(x, self.attn1(normed, mask, prefix), self.norm3)
        if next_norm is None:
            return x + self.ff(h), None
        return add_layer_norm(x, self.ff(h), next_norm)


def _stage(dim_in: int, width: int, n_blocks: int, num_heads: int, head_dim: int, conv: bool) -> nn.ModuleList:
    """``[resnet, transformer blocks(, causal conv)]``, the layout behind upstream's keys."""
    layers: list[nn.Module] = [
        CausalResnetBlock(dim_in, width),
        nn.ModuleList(TransformerBlock(width, num_heads, head_dim) for _ in range(n_blocks)),
    ]
    if conv:
        layers.append(CausalConv1d(width, width, 3))
    return nn.ModuleList(layers)


class CausalConditionalDecoder(nn.Module):
    """The estimator: velocity of the flow ODE, conditioned on mu, speaker, prompt mel and time."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        attention_head_dim: int,
        n_blocks: int,
        num_mid_blocks: int,
        num_heads: int,
        static_chunk_size: int,
    ) -> None:
        super().__init__()
        if len(channels) != 1:
            raise ValueError(
                f"flow.decoder.estimator.channels={list(channels)}: only one U-Net level is supported"
            )
        width = channels[0]
        time_dim = 4 * width
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.static_chunk_size = static_chunk_size
        self.head_dim = attention_head_dim
        self.time_mlp = TimestepMLP(in_channels, time_dim)
        stage = dict(width=width, n_blocks=n_blocks, num_heads=num_heads, head_dim=attention_head_dim)
        self.down_blocks = nn.ModuleList([_stage(in_channels, conv=True, **stage)])
        self.mid_blocks = nn.ModuleList(
            _stage(width, conv=False, **stage) for _ in range(num_mid_blocks)
        )
        self.up_blocks = nn.ModuleList([_stage(2 * width, conv=True, **stage)])
        self.final_block = CausalConvBlock(width, width)
        self.final_proj = Pointwise(width, out_channels)
        # Every resnet block's Linear after Mish of the same time embedding, as one GEMM under
        # upstream's keys ("down_blocks.0.0.mlp.1.weight", ...): 28 kernels a step become 2.
        resnets = ["down_blocks.0.0", *(f"mid_blocks.{i}.0" for i in range(num_mid_blocks)), "up_blocks.0.0"]
        self.time_projections = fuse_linears(self, "time_projections", time_dim,
                                             {f"{name}.mlp.1": width for name in resnets}, bias=True)

    @classmethod
    def from_hparams(cls, args: Mapping[str, Any]) -> CausalConditionalDecoder:
        where = "flow.decoder.estimator"
        check_supported(args, "act_fn", "gelu", "snake", where)
        return cls(
            in_channels=require(args, "in_channels", where),
            out_channels=require(args, "out_channels", where),
            channels=require(args, "channels", where),
            attention_head_dim=require(args, "attention_head_dim", where),
            n_blocks=require(args, "n_blocks", where),
            num_mid_blocks=require(args, "num_mid_blocks", where),
            num_heads=require(args, "num_heads", where),
            static_chunk_size=require(args, "static_chunk_size", where),
        )

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        mu: Tensor,
        t: Tensor,
        spks: Tensor,
        cond: Tensor,
        streaming: bool | Tensor = False,
        prefix: LayerPrefix | None = None,
    ) -> Tensor:
        """Velocity ``[B, out_channels, T]`` at time ``t``.

        x, mu, cond ``[B, C, T]``; mask ``[B, 1, T]`` (1 on valid frames); t ``[B]`` (fp32 keeps
        the time features exact under half precision); spks ``[B, C]``; streaming: one flag or a
        ``[B]`` bool tensor, selecting chunked attention. No host syncs: safe to capture in a
        CUDA graph for a fixed shape.

        ``prefix`` (``prefix.py``) records what the layers leave of these frames, or, where it has
        ``frames``, puts a recorded prefix of whole chunks in front of them: these frames then
        continue it, in streaming mode.
        """
        time_emb = self.time_mlp(timestep_features(t, self.in_channels).to(x.dtype))
        time_adds = iter(self.time_projections.split(F.mish(time_emb)))  # per resnet block, in call order
        frames_last = [x.transpose(1, 2), mu.transpose(1, 2), spks.unsqueeze(1).expand(-1, x.size(-1), -1),
                       cond.transpose(1, 2)]
        h = torch.cat(frames_last, dim=2)  # [B, T, C]
        attn_mask = estimator_mask(mask.squeeze(1) > 0, self.static_chunk_size, streaming,
                                   prefix.frames if prefix is not None else 0, h, self.head_dim)
        resnet, blocks, conv = self.down_blocks[0]
        skip = self._attend(resnet(h, next(time_adds), prefix), blocks, attn_mask, prefix)
        h = conv(skip, prefix)
        for resnet, blocks in self.mid_blocks:
            h = self._attend(resnet(h, next(time_adds), prefix), blocks, attn_mask, prefix)
        resnet, blocks, conv = self.up_blocks[0]
        h = self._attend(resnet(torch.cat([h, skip], dim=2), next(time_adds), prefix), blocks, attn_mask, prefix)
        h = self.final_block(conv(h, prefix), prefix)
        return self.final_proj(h).transpose(1, 2) * mask

    @staticmethod
    def _attend(h: Tensor, blocks: nn.ModuleList, attn_mask: DenseMask | ChunkMask, prefix: LayerPrefix | None) -> Tensor:
        normed = layer_norm(h, blocks[0].norm1)
        for block, following in zip(blocks, [*blocks[1:], None]):
            h, normed = block(h, normed, attn_mask, prefix, None if following is None else following.norm1)
        return h
