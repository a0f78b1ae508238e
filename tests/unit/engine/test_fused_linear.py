"""Fused projections keep upstream's state-dict keys, values, errors and seeded init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from a10tts.engine.flow.attention import SelfAttention
from a10tts.engine.fused_linear import FusedLinear, fuse_linears
from a10tts.engine.qwen2 import Qwen2Config, Qwen2MLP

PARTS = {"q": 4, "k": 2, "v": 2}


class Owner(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.qkv = fuse_linears(self, "qkv", 8, PARTS, bias=bias)
        self.out = nn.Linear(4, 8)


class Separate(nn.Module):
    """What ``Owner`` replaces: the upstream layout."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(8, size, bias=bias) for size in PARTS.values())
        self.out = nn.Linear(4, 8)


def upstream_state(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {f"0.{k}": v for k, v in Separate().state_dict().items()}


def test_state_dict_has_the_separate_keys_in_upstream_order_and_round_trips() -> None:
    state = upstream_state()
    model = nn.Sequential(Owner())
    model.load_state_dict(state, strict=True)
    ours = model.state_dict()
    assert list(ours) == list(state)  # q.weight, q.bias, k.weight, ..., out.bias
    assert all(torch.equal(ours[key], value) for key, value in state.items())
    again = nn.Sequential(Owner())
    again.load_state_dict(ours, strict=True)
    assert torch.equal(again[0].qkv.weight, model[0].qkv.weight)


def test_loaded_separate_weights_compute_what_separate_linears_do() -> None:
    state = upstream_state()
    model = nn.Sequential(Owner())
    model.load_state_dict(state, strict=True)
    x = torch.randn(3, 5, 8)
    for part, out in zip(PARTS, model[0].qkv.split(x)):
        expected = F.linear(x, state[f"0.{part}.weight"], state[f"0.{part}.bias"])
        assert torch.allclose(out, expected, atol=1e-6), part


def test_seeded_init_draws_as_separate_linears() -> None:
    torch.manual_seed(5)
    separate = Separate().state_dict()
    torch.manual_seed(5)
    fused = Owner().state_dict()
    assert all(torch.equal(fused[key], value) for key, value in separate.items())


def test_strict_load_names_a_missing_part() -> None:
    state = upstream_state()
    del state["0.k.weight"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "0\.k\.weight"\.') as error:
        nn.Sequential(Owner()).load_state_dict(state, strict=True)
    assert "qkv" not in str(error.value)


def test_non_strict_load_keeps_a_missing_part_and_loads_the_others() -> None:
    state = upstream_state()
    del state["0.k.weight"]
    model = nn.Sequential(Owner())
    before = model[0].qkv.weight[4:6].clone()
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["0.k.weight"] and result.unexpected_keys == []
    q, k, v = model[0].qkv.weight.split(model[0].qkv.sizes)
    assert torch.equal(q, state["0.q.weight"]) and torch.equal(v, state["0.v.weight"])
    assert torch.equal(k, before)


def test_a_misshaped_part_and_a_fused_key_are_errors() -> None:
    state = upstream_state()
    state["0.v.bias"] = torch.zeros(3)
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.v\.bias: copying a param with shape"):
        nn.Sequential(Owner()).load_state_dict(state, strict=True)
    state = upstream_state()
    state["0.qkv.weight"] = torch.zeros(8, 8)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "0\.qkv\.weight"'):
        nn.Sequential(Owner()).load_state_dict(state, strict=True)


def test_keep_vars_gives_the_fused_parameters() -> None:
    # torch.jit's tracer (the ONNX export) finds a module's parameters this way.
    model = Owner(bias=False)
    state = model.state_dict(keep_vars=True)
    assert state["qkv.weight"] is model.qkv.weight and "q.weight" not in state
    assert isinstance(model.qkv, FusedLinear) and isinstance(model.qkv, nn.Linear)


def test_qwen2_mlp_and_flow_attention_keep_upstream_keys() -> None:
    config = Qwen2Config(hidden_size=8, intermediate_size=12, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, rms_norm_eps=1e-6, rope_theta=1e6, vocab_size=10,
                         tie_word_embeddings=True, head_dim=4)
    mlp = Qwen2MLP(config)
    state = mlp.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "gate_proj.weight": (12, 8), "up_proj.weight": (12, 8), "down_proj.weight": (8, 12)}
    x = torch.randn(3, 8)
    expected = F.linear(F.silu(F.linear(x, state["gate_proj.weight"])) * F.linear(x, state["up_proj.weight"]),
                        state["down_proj.weight"])
    assert torch.allclose(mlp(x), expected, atol=1e-6)
    assert list(SelfAttention(8, 2, 3).state_dict()) == [
        "to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias"]
