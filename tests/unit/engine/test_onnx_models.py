"""ONNX runners against tiny graphs with the real models' interfaces.

The graphs (``a10tts.engine.demo_onnx``, also the demo model's files) mirror what upstream feeds
the real files: speech_tokenizer_v2.onnx takes ``feats`` float32 [1,128,T] and ``feats_length``
int32 [1] and returns token ids [1,T'] (T' = ceil(T/4), 25 Hz from 100 Hz frames); campplus.onnx
takes ``input`` float32 [1,T,80] and returns [1,192]. Each graph has a torch twin to compare with.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from a10tts.engine.demo_onnx import (
    EMBED_DIM,
    FBANK_BINS,
    N_MELS,
    STRIDE,
    build_campplus,
    build_speech_tokenizer,
    campplus_reference,
    campplus_weights,
    speech_tokenizer_reference,
    speech_tokenizer_weights,
)
from a10tts.engine.onnx_models import (
    SPEECH_TOKENIZER_MAX_FRAMES,
    OnnxModelError,
    SpeakerEncoder,
    SpeechTokenizer,
    execution_providers,
)

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"


@pytest.fixture(scope="module")
def speech_tokenizer_case(tmp_path_factory) -> tuple[SpeechTokenizer, torch.Tensor, torch.Tensor]:
    conv, proj = speech_tokenizer_weights()
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
    weight, bias = campplus_weights()
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

    weight, bias = campplus_weights()
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
    weight, bias = campplus_weights()
    campplus = build_campplus(tmp_path / "campplus.onnx", weight, bias)
    with pytest.raises(OnnxModelError, match="expected 2 inputs, the graph has 1"):
        SpeechTokenizer(campplus)


def test_providers_fall_back_to_cpu() -> None:
    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    providers = execution_providers("cuda:1")
    assert providers[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        assert providers == ["CPUExecutionProvider"]
