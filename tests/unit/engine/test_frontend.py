"""Prompt assembly: features of the golden prompt wav, token/mel alignment, per-mode LM inputs, errors.

Most tests replace the speech tokenizer and CAM++ by recording stand-ins, to check exactly what the
frontend feeds them; one runs the real ONNX runners on the demo model's tiny graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from a10tts.engine.demo_onnx import (
    build_campplus,
    build_speech_tokenizer,
    campplus_reference,
    campplus_weights,
    speech_tokenizer_reference,
    speech_tokenizer_weights,
)
from a10tts.engine.frontend import Frontend, FrontendLimits, ModelInputs, PromptFeatures, align_prompt
from a10tts.engine.text_normalize import normalize_prompt
from a10tts.engine.tokenizer import END_OF_PROMPT, TextTokenizer, write_demo_tokenizer

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
FEATURE_ATOL = 1e-4  # golden README: log features of small values


class RecordingSpeechTokenizer:
    """Token i = i % 6561 at 25 Hz (one token per 4 whisper frames), like the real model's rate."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        self.inputs.append(log_mel)
        return torch.arange(-(-log_mel.shape[-1] // 4), dtype=torch.int32) % 6561


class RecordingSpeakerEncoder:
    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, fbank: torch.Tensor) -> torch.Tensor:
        self.inputs.append(fbank)
        return torch.linspace(-1.0, 1.0, 192)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    return TextTokenizer.from_dir(write_demo_tokenizer(tmp_path_factory.mktemp("tok"), 1000))


def _frontend(tokenizer: TextTokenizer, **kwargs) -> Frontend:
    return Frontend(tokenizer, RecordingSpeechTokenizer(), RecordingSpeakerEncoder(), token_mel_ratio=2, **kwargs)


@pytest.fixture
def frontend(tokenizer: TextTokenizer) -> Frontend:
    return _frontend(tokenizer)


def _write_sine(path: Path, seconds: float, sample_rate: int = 16000) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sample_rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def prompt(tokenizer: TextTokenizer, tmp_path_factory) -> PromptFeatures:
    wav = _write_sine(tmp_path_factory.mktemp("wav") / "p.wav", 2.0)
    return _frontend(tokenizer).prompt_features("Hello there, this is my voice.", wav)


def test_prompt_features_of_golden_wav(frontend: Frontend) -> None:
    golden = load_file(GOLDEN / "features_case.safetensors")
    wav_bytes = (GOLDEN / "features_wav24k_float32.wav").read_bytes()
    features = frontend.prompt_features("收到好友从远方寄来的生日礼物。", wav_bytes)

    (log_mel,) = frontend.speech_tokenizer.inputs
    torch.testing.assert_close(log_mel, golden["whisper_logmel128"][0], atol=FEATURE_ATOL, rtol=0)
    (fbank,) = frontend.speaker_encoder.inputs
    # Log energies reach ~14 here; one bin lands 1.1e-4 off (kaldi_fbank's own float32 error
    # is ~1e-5 relative at that size), hence the small rtol on top of the README's atol.
    torch.testing.assert_close(fbank, golden["kaldi_fbank80_raw"], atol=FEATURE_ATOL, rtol=1e-5)

    # 1.5 s: 150 whisper frames -> 38 tokens, 75 mel frames -> 37 tokens; both cut to 37 / 74.
    assert features.prompt_speech_tokens.tolist() == list(range(37))
    assert features.prompt_speech_tokens.dtype == torch.int32
    torch.testing.assert_close(features.prompt_mel, golden["speech_feat_24k"][0, :74], atol=FEATURE_ATOL, rtol=0)
    torch.testing.assert_close(features.speaker_embedding, torch.linspace(-1.0, 1.0, 192))
    expected_ids = frontend.tokenizer.encode(normalize_prompt("收到好友从远方寄来的生日礼物。"))
    assert features.prompt_text_ids.tolist() == expected_ids and features.prompt_text_ids.dtype == torch.int32


@pytest.mark.parametrize(
    ("n_tokens", "n_frames", "kept"),
    [(38, 75, 37), (30, 75, 30), (37, 74, 37), (0, 10, 0)],
)
def test_align_prompt_keeps_two_frames_per_token(n_tokens: int, n_frames: int, kept: int) -> None:
    tokens = torch.arange(n_tokens, dtype=torch.int32)
    mel = torch.arange(n_frames * 80, dtype=torch.float32).reshape(n_frames, 80)
    tokens_out, mel_out = align_prompt(tokens, mel, token_mel_ratio=2)
    assert tokens_out.tolist() == list(range(kept))
    assert torch.equal(mel_out, mel[: 2 * kept])


def test_zero_shot_feeds_prompt_text_and_tokens_to_the_lm(frontend: Frontend, prompt: PromptFeatures) -> None:
    (inputs,) = frontend.frontend_zero_shot("Nice to meet you.", prompt)
    assert inputs.text_ids.tolist() == frontend.tokenizer.encode("Nice to meet you.")
    assert inputs.llm_prompt_text_ids is prompt.prompt_text_ids
    assert inputs.llm_prompt_speech_tokens is prompt.prompt_speech_tokens
    assert inputs.prompt is prompt
    assert prompt.prompt_mel.shape == (2 * prompt.prompt_speech_tokens.shape[0], 80)
    moved = prompt.to("cpu")  # e.g. a cached voice moved to the serving device
    assert all(torch.equal(getattr(moved, f), getattr(prompt, f)) for f in vars(prompt))


def test_cross_lingual_hides_the_prompt_from_the_lm(frontend: Frontend, prompt: PromptFeatures) -> None:
    (inputs,) = frontend.frontend_cross_lingual("你好，世界！", prompt)
    assert inputs.text_ids.tolist() == frontend.tokenizer.encode("你好，世界！")
    assert inputs.llm_prompt_text_ids.numel() == 0 and inputs.llm_prompt_speech_tokens.numel() == 0
    assert inputs.prompt is prompt  # the flow still conditions on the prompt


@pytest.mark.parametrize("instruction", ["Speak happily.", "Speak happily.<|endofprompt|>"])
def test_instruct2_prompts_the_lm_with_the_instruction(
    frontend: Frontend, prompt: PromptFeatures, instruction: str
) -> None:
    (inputs,) = frontend.frontend_instruct2("Good morning.", instruction, prompt)
    expected = frontend.tokenizer.encode("Speak happily.") + [frontend.tokenizer.token_id(END_OF_PROMPT)]
    assert inputs.llm_prompt_text_ids.tolist() == expected
    assert inputs.llm_prompt_speech_tokens.numel() == 0
    assert inputs.prompt is prompt


def test_long_text_gives_one_input_per_segment(frontend: Frontend, prompt: PromptFeatures) -> None:
    text = " ".join(f"This is sentence number {i}, and it keeps going for a while." for i in range(12))
    inputs = frontend.frontend_zero_shot(text, prompt)
    segments = frontend.split_text(text)
    assert len(inputs) == len(segments) > 1
    assert [i.text_ids.tolist() for i in inputs] == [frontend.tokenizer.encode(s) for s in segments]
    assert all(isinstance(i, ModelInputs) and i.prompt is prompt for i in inputs)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "text is empty"), ("   \n", "text is empty"), ("?!…", "nothing to speak"), ("a" * 5001, "5001 characters")],
)
def test_bad_text_is_refused(frontend: Frontend, prompt: PromptFeatures, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frontend.frontend_cross_lingual(text, prompt)


def test_segment_token_limit(tokenizer: TextTokenizer, prompt: PromptFeatures) -> None:
    frontend = _frontend(tokenizer, limits=FrontendLimits(max_segment_tokens=20))
    with pytest.raises(ValueError, match=r"tokens without a sentence break; the limit is 20"):
        frontend.frontend_cross_lingual("word " * 40, prompt)
    with pytest.raises(ValueError, match="instruction"):
        frontend.frontend_instruct2("Hi.", "Please speak " * 20, prompt)


def test_zero_shot_needs_a_prompt_transcript(frontend: Frontend, tmp_path: Path) -> None:
    voice = frontend.prompt_features("", _write_sine(tmp_path / "p.wav", 1.0))
    assert voice.prompt_text_ids.numel() == 0
    with pytest.raises(ValueError, match="prompt_text"):
        frontend.frontend_zero_shot("Hello.", voice)
    assert len(frontend.frontend_cross_lingual("Hello.", voice)) == 1
    with pytest.raises(ValueError, match="instruct_text is empty"):
        frontend.frontend_instruct2("Hello.", "  ", voice)


def test_prompt_audio_limits(frontend: Frontend, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="0.30 s long; at least 0.5 s"):
        frontend.prompt_features("Hi.", _write_sine(tmp_path / "short.wav", 0.3))
    with pytest.raises(ValueError, match="limit is 30 s"):
        frontend.prompt_features("Hi.", _write_sine(tmp_path / "long.wav", 30.5))
    with pytest.raises(ValueError, match="16000 Hz"):
        frontend.prompt_features("Hi.", _write_sine(tmp_path / "8k.wav", 2.0, sample_rate=8000))
    assert frontend.speech_tokenizer.inputs == []  # refused before any model ran


def test_from_model_dir_runs_the_onnx_models(tmp_path: Path) -> None:
    write_demo_tokenizer(tmp_path / "CosyVoice-BlankEN", 1000)
    conv, proj = speech_tokenizer_weights()
    weight, bias = campplus_weights()
    build_speech_tokenizer(tmp_path / "speech_tokenizer_v2.onnx", conv, proj)
    build_campplus(tmp_path / "campplus.onnx", weight, bias)
    frontend = Frontend.from_model_dir(tmp_path, token_mel_ratio=2)

    golden = load_file(GOLDEN / "features_case.safetensors")
    features = frontend.prompt_features("Hi.", GOLDEN / "features_wav24k_float32.wav")
    expected_tokens = speech_tokenizer_reference(golden["whisper_logmel128"], 150, conv, proj)[:37]
    assert torch.equal(features.prompt_speech_tokens, expected_tokens.to(torch.int32))
    expected_embedding = campplus_reference(golden["kaldi_fbank80_meannorm"], weight, bias)
    torch.testing.assert_close(features.speaker_embedding, expected_embedding, atol=FEATURE_ATOL, rtol=0)
    assert features.prompt_mel.shape == (74, 80)


def test_from_model_dir_names_the_missing_file(tmp_path: Path) -> None:
    write_demo_tokenizer(tmp_path / "CosyVoice-BlankEN", 1000)
    with pytest.raises(FileNotFoundError, match="speech_tokenizer_v2.onnx"):
        Frontend.from_model_dir(tmp_path, token_mel_ratio=2)
