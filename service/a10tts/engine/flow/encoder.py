"""Upsampling conformer encoder: speech tokens -> frame-rate hidden states (CosyVoice2 flow).

Token embeddings go through a linear input layer, a look-ahead convolution, a conformer
stack at token rate, a causal x``upsample_factor`` upsampler and a second conformer stack at
mel-frame rate. Parameter names follow upstream's ``UpsampleConformerEncoder``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.hparams import check_supported, require
from a10tts.engine.flow.attention import RelPositionAttention, relative_position_encoding
from a10tts.engine.flow.masks import attention_mask, lengths_to_mask

# Upstream builds the frame-rate stack with a fixed depth, whatever the yaml says.
UP_BLOCKS = 4


class LinearInput(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(dim) as the relative-position attention expects."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim, eps=1e-5))
        self.scale = math.sqrt(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(x) * self.scale


class PreLookaheadLayer(nn.Module):
    """Gives each token a view of the next ``lookahead`` tokens, then mixes causally; residual.

    Positions past a row's last token must hold zeros: they are the look-ahead padding.
    """

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        """x ``[B, T, C]`` -> ``[B, T, C]``."""
        h = F.pad(x.transpose(1, 2), (0, self.lookahead))
        h = F.leaky_relu(self.conv1(h))
        h = self.conv2(F.pad(h, (self.conv2.kernel_size[0] - 1, 0)))
        return x + h.transpose(1, 2)


class CausalUpsample(nn.Module):
    """Repeats every frame ``stride`` times, then smooths with a left-padded convolution."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, kernel_size=2 * stride + 1)

    def forward(self, x: Tensor) -> Tensor:
        """x ``[B, C, T]`` -> ``[B, C, T*stride]``."""
        x = x.repeat_interleave(self.stride, dim=-1)
        return self.conv(F.pad(x, (2 * self.stride, 0)))


class FeedForward(nn.Module):
    """Position-wise feed-forward with SiLU ("swish")."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    """Pre-norm attention + feed-forward (CosyVoice2 uses neither the conv module nor macaron FF)."""

    def __init__(self, dim: int, num_heads: int, ff_hidden: int) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(dim, num_heads)
        self.feed_forward = FeedForward(dim, ff_hidden)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, position_encoding: Tensor, mask: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm_mha(x), position_encoding, mask)
        return x + self.feed_forward(self.norm_ff(x))


class UpsampleConformerEncoder(nn.Module):
    """Token-rate conformer stack, causal upsampling, frame-rate conformer stack.

    Streaming uses chunked attention: ``static_chunk_size`` tokens in the first stack and
    ``static_chunk_size * upsample_factor`` frames in the second.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        attention_heads: int,
        linear_units: int,
        num_blocks: int,
        static_chunk_size: int = 0,
        pre_lookahead_len: int = 3,
        upsample_factor: int = 2,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.static_chunk_size = static_chunk_size
        self.upsample_factor = upsample_factor
        self.embed = LinearInput(input_size, output_size)
        self.pre_lookahead_layer = PreLookaheadLayer(output_size, pre_lookahead_len)
        self.encoders = nn.ModuleList(
            ConformerBlock(output_size, attention_heads, linear_units) for _ in range(num_blocks)
        )
        self.up_layer = CausalUpsample(output_size, upsample_factor)
        self.up_embed = LinearInput(output_size, output_size)
        self.up_encoders = nn.ModuleList(
            ConformerBlock(output_size, attention_heads, linear_units) for _ in range(UP_BLOCKS)
        )
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)

    @classmethod
    def from_hparams(
        cls, args: Mapping[str, Any], *, pre_lookahead_len: int, upsample_factor: int
    ) -> UpsampleConformerEncoder:
        """Build from the yaml's ``encoder`` node args; the flow passes its look-ahead and mel ratio."""
        where = "flow.encoder"
        for key, supported, upstream_default in (
            ("input_layer", "linear", "conv2d"),
            ("pos_enc_layer_type", "rel_pos_espnet", "rel_pos"),
            ("selfattention_layer_type", "rel_selfattn", "rel_selfattn"),
            ("activation_type", "swish", "swish"),
            ("normalize_before", True, True),
            ("macaron_style", False, True),
            ("use_cnn_module", False, True),
            ("key_bias", True, True),
        ):
            check_supported(args, key, supported, upstream_default, where)
        return cls(
            input_size=require(args, "input_size", where),
            output_size=require(args, "output_size", where),
            attention_heads=require(args, "attention_heads", where),
            linear_units=require(args, "linear_units", where),
            num_blocks=require(args, "num_blocks", where),
            static_chunk_size=args.get("static_chunk_size", 0),
            pre_lookahead_len=pre_lookahead_len,
            upsample_factor=upsample_factor,
        )

    def forward(
        self, x: Tensor, input_len: Tensor, output_len: Tensor, streaming: bool | Tensor, keep_all: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Encode a padded batch of token embeddings.

        x ``[B, N, input_size]``; ``input_len`` counts each row's tokens including look-ahead
        context; ``output_len`` the tokens to encode (``input_len`` minus the context when not
        finalizing). Returns hidden states ``[B, T, output_size]`` with ``T = max(output_len) *
        upsample_factor`` (``N * upsample_factor`` with ``keep_all``: no host sync, for CUDA
        graphs; the positions past a row's ``output_len`` are padding either way) and their
        lengths ``[B]``.
        """
        x = self.embed(x) * lengths_to_mask(input_len, x.size(1)).unsqueeze(-1).to(x.dtype)
        length = x.size(1) if keep_all else int(output_len.max())
        x = self.pre_lookahead_layer(x)[:, :length]
        x = self._run_stack(self.encoders, x, output_len, self.static_chunk_size, streaming)

        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        output_len = output_len * self.upsample_factor
        x = self.up_embed(x)
        x = self._run_stack(
            self.up_encoders, x, output_len, self.static_chunk_size * self.upsample_factor, streaming
        )
        return self.after_norm(x), output_len

    @staticmethod
    def _run_stack(
        blocks: nn.ModuleList, x: Tensor, lengths: Tensor, chunk_size: int, streaming: bool | Tensor
    ) -> Tensor:
        mask = attention_mask(lengths_to_mask(lengths, x.size(1)), chunk_size, streaming)
        position_encoding = relative_position_encoding(x.size(1), x.size(2), x.device, x.dtype)
        for block in blocks:
            x = block(x, position_encoding, mask)
        return x
