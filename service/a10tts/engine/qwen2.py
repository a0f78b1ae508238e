"""Qwen2 decoder, the text LM inside CosyVoice2, written for slot-based KV-cache serving.

State-dict keys follow Hugging Face's ``Qwen2ForCausalLM`` so that upstream checkpoints load
strictly (q/k/v and gate/up run as one GEMM each, under the separate keys: ``fused_linear``).
Tokens travel packed as ``[num_tokens, hidden]`` and a ``CacheBatch`` gives each its slot and
position, so one forward pass serves a ragged prefill and a decode step alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.fused_linear import fuse_linears
from a10tts.engine.kernels.rms_norm import add_rms_norm, rms_norm
from a10tts.engine.kernels.rotary import rotary_qkv
from a10tts.engine.kv_cache import CacheBatch, KVCache, cached_attention, write_kv

_REQUIRED_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_theta",
    "vocab_size",
    "tie_word_embeddings",
)


@dataclass(frozen=True)
class Qwen2Config:
    """The inference-relevant part of a Hugging Face Qwen2 ``config.json``."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Qwen2Config:
        for key in _REQUIRED_KEYS:
            if key not in config:
                raise ValueError(f"Qwen2 config: missing required key '{key}'")
        # Variants this decoder does not implement must fail loudly, not run wrong.
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"Qwen2 config: hidden_act {config['hidden_act']!r} is not supported")
        if config.get("use_sliding_window"):
            raise ValueError("Qwen2 config: use_sliding_window is not supported")
        if config.get("rope_scaling"):
            raise ValueError("Qwen2 config: rope_scaling is not supported")
        heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
        if heads % kv_heads:
            raise ValueError(
                f"Qwen2 config: num_attention_heads {heads} is not a multiple of "
                f"num_key_value_heads {kv_heads}"
            )
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return cls(**{key: config[key] for key in _REQUIRED_KEYS}, head_dim=head_dim)

    @classmethod
    def from_file(cls, path: str | Path) -> Qwen2Config:
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read Qwen2 config: {exc}") from exc
        return cls.from_dict(config)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

    def after_add(self, x: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """``(x + delta, self(x + delta))``, in one pass on the GPU."""
        return add_rms_norm(x, delta, self.weight, self.eps)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """fp32 ``cos``/``sin`` tables ``[N, head_dim]`` for the rotate-half RoPE convention.

    Computed per forward from the positions (a handful of tiny ops) instead of a cached
    buffer, so casting the model to half precision never degrades the angles.
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


class Qwen2Attention(nn.Module):
    """Grouped-query self-attention with biased q/k/v projections (one GEMM) over the slot cache."""

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = fuse_linears(self, "qkv_proj", config.hidden_size,
                                     {"q_proj": q_size, "k_proj": kv_size, "v_proj": kv_size}, bias=True)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        layer_cache: tuple[Tensor, Tensor],
        batch: CacheBatch,
    ) -> Tensor:
        q, k, v = rotary_qkv(self.qkv_proj(x), *rope, self.num_heads, self.num_kv_heads, self.head_dim)
        keys, values = layer_cache
        write_kv(keys, values, batch, k, v)
        return self.o_proj(cached_attention(q, keys, values, batch, self.scale))


class Qwen2MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``, gate and up as one GEMM."""

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.gate_up_proj = fuse_linears(self, "gate_up_proj", config.hidden_size,
                                         {"gate_proj": config.intermediate_size, "up_proj": config.intermediate_size},
                                         bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj.split(x)
        return self.down_proj(F.silu(gate) * up)


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.self_attn = Qwen2Attention(config)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        normed: Tensor,
        rope: tuple[Tensor, Tensor],
        layer_cache: tuple[Tensor, Tensor],
        batch: CacheBatch,
        next_norm: RMSNorm,
    ) -> tuple[Tensor, Tensor]:
        """x: the residual stream, ``normed``: ``input_layernorm(x)``. Returns the new stream and
        ``next_norm`` of it (the next layer's first norm, or the final one): each residual add and
        the norm after it run as one pass."""
        x, h = self.post_attention_layernorm.after_add(x, self.self_attn(normed, rope, layer_cache, batch))
        return next_norm.after_add(x, self.mlp(h))


class Qwen2Model(nn.Module):
    """Token embeddings, decoder layers and final norm: packed embeddings in, hidden states out."""

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Qwen2DecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, inputs_embeds: Tensor, cache: KVCache, batch: CacheBatch) -> Tensor:
        """``inputs_embeds`` ``[N, hidden]`` -> final-norm hidden states ``[N, hidden]``.

        Writes the tokens' keys/values into ``cache`` at the positions ``batch`` reserved.
        """
        rope = rotary_cos_sin(batch.token_positions, self.config.head_dim, self.config.rope_theta)
        hidden, normed = inputs_embeds, self.layers[0].input_layernorm(inputs_embeds)
        next_norms = [layer.input_layernorm for layer in self.layers[1:]] + [self.norm]
        for index, (layer, next_norm) in enumerate(zip(self.layers, next_norms)):
            hidden, normed = layer(hidden, normed, rope, cache.layer(index), batch, next_norm)
        return normed


class Qwen2ForCausalLM(nn.Module):
    """``Qwen2Model`` plus the text ``lm_head``.

    CosyVoice2 never reads text logits; ``lm_head`` exists so checkpoints load strictly. With
    ``tie_word_embeddings`` it shares the embedding matrix, and the state dict carries it under
    both names, as upstream's does.
    """

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.model = Qwen2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
