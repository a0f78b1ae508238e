"""Tiny ONNX stand-ins for `speech_tokenizer_v2.onnx` and `campplus.onnx` (demo model, tests).

They have the real files' interfaces, so the runners in `onnx_models` treat them alike:
the tokenizer takes ``feats`` float32 [1, 128, T] and ``feats_length`` int32 [1] and returns
int64 ``indices`` [1, ceil(T/4)] (25 Hz tokens from 100 Hz frames); CAM++ takes ``input``
float32 [1, T, 80] and returns ``output`` [1, 192]. Each has a torch twin for tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

N_MELS, HIDDEN, N_SPEECH_TOKENS, STRIDE = 128, 16, 6561, 4
FBANK_BINS, EMBED_DIM = 80, 192


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any recent onnxruntime
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def speech_tokenizer_weights(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conv = torch.randn(HIDDEN, N_MELS, STRIDE, generator=g) * 0.1
    proj = torch.randn(HIDDEN, N_SPEECH_TOKENS, generator=g)
    return conv, proj


def speech_tokenizer_reference(feats: torch.Tensor, n_frames: int, conv: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """What the tiny graph computes: strided conv, projection, argmax, cut to ceil(T/4)."""
    hidden = torch.nn.functional.conv1d(torch.nn.functional.pad(feats, (0, STRIDE - 1)), conv, stride=STRIDE)
    tokens = (hidden.transpose(1, 2) @ proj).argmax(-1)
    return tokens[0, : (n_frames + STRIDE - 1) // STRIDE]


def build_speech_tokenizer(path: Path, conv: torch.Tensor, proj: torch.Tensor) -> Path:
    nodes = [
        helper.make_node("Conv", ["feats", "conv_w"], ["hidden"], strides=[STRIDE], pads=[0, STRIDE - 1]),
        helper.make_node("Transpose", ["hidden"], ["hidden_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["hidden_t", "proj"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["all_tokens"], axis=2, keepdims=0),
        # Valid tokens: ceil(feats_length / 4), which makes the graph depend on feats_length.
        helper.make_node("Add", ["feats_length", "three"], ["len_plus"]),
        helper.make_node("Div", ["len_plus", "four"], ["n_tokens32"]),
        helper.make_node("Cast", ["n_tokens32"], ["n_tokens"], to=TensorProto.INT64),
        helper.make_node("Slice", ["all_tokens", "zero", "n_tokens", "one"], ["indices"]),
    ]
    initializers = [
        numpy_helper.from_array(conv.numpy(), "conv_w"),
        numpy_helper.from_array(proj.numpy(), "proj"),
        numpy_helper.from_array(np.array([STRIDE - 1], np.int32), "three"),
        numpy_helper.from_array(np.array([STRIDE], np.int32), "four"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_speech_tokenizer",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, N_MELS, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "T_tokens"])],
        initializers,
    )
    return _save(graph, path)


def campplus_weights(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * FBANK_BINS, EMBED_DIM, generator=g) * 0.1, torch.randn(EMBED_DIM, generator=g)


def campplus_reference(fbank_normalised: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Statistics pooling (mean and mean of squares over time) and an affine map to 192-d."""
    stats = torch.cat([fbank_normalised.mean(0), (fbank_normalised**2).mean(0)])
    return stats @ weight + bias


def build_campplus(path: Path, weight: torch.Tensor, bias: torch.Tensor) -> Path:
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["input", "input"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["mean_square"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["mean", "mean_square"], ["stats"], axis=1),
        helper.make_node("Gemm", ["stats", "weight", "bias"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", FBANK_BINS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, EMBED_DIM])],
        [numpy_helper.from_array(weight.numpy(), "weight"), numpy_helper.from_array(bias.numpy(), "bias")],
    )
    return _save(graph, path)
