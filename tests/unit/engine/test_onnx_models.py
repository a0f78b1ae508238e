"""ONNX runners against tiny graphs with the real models' interfaces.

The graphs are built with onnx.helper and mirror what upstream feeds the real files:
speech_tokenizer_v2.onnx takes ``feats`` float32 [1,128,T] and ``feats_length`` int32 [1] and
returns token ids [1,T'] (T' = ceil(T/4), 25 Hz from 100 Hz frames); campplus.onnx takes
``input`` float32 [1,T,80] and returns [1,192]. Each graph has a torch twin to compare with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import load_file

from a10tts.engine.onnx_models import (
    SPEECH_TOKENIZER_MAX_FRAMES,
    OnnxModelError,
    SpeakerEncoder,
    SpeechTokenizer,
    execution_providers,
)

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
N_MELS, HIDDEN, N_SPEECH_TOKENS, STRIDE = 128, 16, 6561, 4
FBANK_BINS, EMBED_DIM = 80, 192


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any recent onnxruntime
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny_speech_tokenizer_weights(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conv = torch.randn(HIDDEN, N_MELS, STRIDE, generator=g) * 0.1
    proj = torch.randn(HIDDEN, N_SPEECH_TOKENS, generator=g)
    return conv, proj


def speech_tokenizer_reference(feats: torch.Tensor, n_frames: int, conv: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """The torch function the tiny graph computes: strided conv, projection, argmax, cut to length."""
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


def tiny_campplus_weights(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
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


@pytest.fixture(scope="module")
def speech_tokenizer_case(tmp_path_factory) -> tuple[SpeechTokenizer, torch.Tensor, torch.Tensor]:
    conv, proj = tiny_speech_tokenizer_weights()
    path = build_speech_tokenizer(tmp_path_factory.mktemp("onnx") / "speech_tokenizer_v2.onnx", conv, proj)
    return SpeechTokenizer(path), conv, proj


@pytest.mark.parametrize("n_frames", [1, 150, 151, 2999, SPEECH_TOKENIZER_MAX_FRAMES])
def test_speech_tokenizer_matches_torch(speech_tokenizer_case, n_frames: int) -> None:
    runner, conv, proj = speech_tokenizer_case
    feats = torch.randn(N_MELS, n_frames, generator=torch.Generator().manual_seed(n_frames))
    tokens = runner(feats)
    expected = speech_tokenizer_reference(feats[None], n_frames, conv, proj)
    assert tokens.dtype == torch.int32
    assert tokens.shape == (-(-n_frames // STRIDE),)
    assert torch.equal(tokens, expected.to(torch.int32))
    assert torch.equal(runner(feats[None]), tokens)  # a leading batch axis of 1 is accepted


def test_speech_tokenizer_refuses_more_than_30_seconds(speech_tokenizer_case) -> None:
    runner, _, _ = speech_tokenizer_case
    with pytest.raises(ValueError, match="30 s"):
        runner(torch.zeros(N_MELS, SPEECH_TOKENIZER_MAX_FRAMES + 1))


def test_speech_tokenizer_checks_mel_bins(speech_tokenizer_case) -> None:
    runner, _, _ = speech_tokenizer_case
    with pytest.raises(ValueError, match="128 mel bins, got 80"):
        runner(torch.zeros(80, 100))
    with pytest.raises(ValueError, match="n_mels, frames"):
        runner(torch.zeros(2, N_MELS, 100))


def test_speaker_encoder_mean_normalises_and_matches_torch(tmp_path: Path) -> None:
    weight, bias = tiny_campplus_weights()
    runner = SpeakerEncoder(build_campplus(tmp_path / "campplus.onnx", weight, bias))
    fbank = torch.randn(148, FBANK_BINS, generator=torch.Generator().manual_seed(7)) * 3 - 8
    embedding = runner(fbank)
    expected = campplus_reference(fbank - fbank.mean(0, keepdim=True), weight, bias)
    assert embedding.shape == (EMBED_DIM,) and embedding.dtype == torch.float32
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=0)
    # Mean normalisation makes the embedding blind to a constant offset of the log energies.
    torch.testing.assert_close(runner(fbank + 5.0), embedding, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="80 fbank bins, got 40"):
        runner(torch.zeros(10, 40))


def test_golden_features_through_both_runners(speech_tokenizer_case, tmp_path: Path) -> None:
    golden = load_file(GOLDEN / "features_case.safetensors")
    runner, conv, proj = speech_tokenizer_case
    log_mel = golden["whisper_logmel128"]  # [1, 128, 150]: 1.5 s
    tokens = runner(log_mel)
    assert tokens.shape == (38,)
    assert torch.equal(tokens, speech_tokenizer_reference(log_mel, 150, conv, proj).to(torch.int32))

    weight, bias = tiny_campplus_weights()
    encoder = SpeakerEncoder(build_campplus(tmp_path / "campplus.onnx", weight, bias))
    # The runner's mean normalisation must equal upstream's (golden kaldi_fbank80_meannorm).
    expected = campplus_reference(golden["kaldi_fbank80_meannorm"], weight, bias)
    torch.testing.assert_close(encoder(golden["kaldi_fbank80_raw"]), expected, atol=1e-5, rtol=0)


def test_missing_and_corrupt_files_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "campplus.onnx"
    with pytest.raises(FileNotFoundError, match="campplus.onnx does not exist"):
        SpeakerEncoder(missing)
    corrupt = tmp_path / "speech_tokenizer_v2.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(OnnxModelError, match=r"cannot load ONNX model .*speech_tokenizer_v2\.onnx"):
        SpeechTokenizer(corrupt)


def test_runner_refuses_a_graph_with_the_wrong_interface(tmp_path: Path) -> None:
    weight, bias = tiny_campplus_weights()
    campplus = build_campplus(tmp_path / "campplus.onnx", weight, bias)
    with pytest.raises(OnnxModelError, match="expected 2 inputs, the graph has 1"):
        SpeechTokenizer(campplus)


def test_providers_fall_back_to_cpu() -> None:
    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    providers = execution_providers("cuda:1")
    assert providers[-1] == "CPUExecutionProvider"
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        assert providers == ["CPUExecutionProvider"]
