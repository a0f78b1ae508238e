"""The encode stage's work on the demo frontend: LM inputs per mode, voices, the prompt cache,
and a clear 4xx for every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from a10tts.engine.frontend import Frontend, FrontendLimits
from a10tts.pipeline.encode_worker import RequestEncoder
from a10tts.pipeline.internal import PROMPT_TENSORS
from a10tts.pipeline.messages import SynthesisRequest
from a10tts.pipeline.prompt_cache import PromptCache
from a10tts.pipeline.stage import RequestError
from a10tts.voices import VoiceRegistry


def tone(seconds: float, sample_rate: int = 16000, hz: float = 180.0) -> bytes:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sample_rate, format="WAV")
    return buffer.getvalue()


PROMPT = tone(1.5)


@pytest.fixture(scope="module")
def frontend(demo_dir: Path) -> Frontend:
    limits = FrontendLimits(max_text_chars=60, max_prompt_seconds=3.0)
    return Frontend.from_model_dir(demo_dir, token_mel_ratio=2, limits=limits)


@pytest.fixture
def encoder(frontend: Frontend, tmp_path: Path) -> RequestEncoder:
    return RequestEncoder(frontend, PromptCache(capacity=8), VoiceRegistry(tmp_path))


def request(**fields) -> SynthesisRequest:
    fields = {"request_id": "r", "reply_to": 0, "mode": "zero_shot", "text": "Hello there.",
              "prompt_text": "a prompt", "prompt_wav": PROMPT, **fields}
    return SynthesisRequest(**fields)


def test_zero_shot_shows_the_lm_the_prompt(encoder: RequestEncoder) -> None:
    message, tensors = encoder.encode(request(text="First sentence here. And a second, longer one follows it!",
                                              seed=5, stream=False, speed=1.5))
    assert (message.request_id, message.seed, message.stream, message.speed) == ("r", 5, False, 1.5)
    assert message.num_segments >= 1
    assert all(len(tensors[f"text.{i}"]) > 0 for i in range(message.num_segments))
    assert len(tensors["llm_prompt_text"]) > 0 and len(tensors["llm_prompt_speech"]) > 0
    assert set(PROMPT_TENSORS) <= tensors.keys()
    assert len(tensors["prompt_mel"]) == 2 * len(tensors["prompt_speech_tokens"])


def test_cross_lingual_and_instruct2_hide_the_prompt_speech(encoder: RequestEncoder, frontend: Frontend) -> None:
    _, cross = encoder.encode(request(mode="cross_lingual", prompt_text=""))
    assert len(cross["llm_prompt_text"]) == 0 and len(cross["llm_prompt_speech"]) == 0
    _, instruct = encoder.encode(request(mode="instruct2", instruct_text="Speak slowly."))
    assert len(instruct["llm_prompt_speech"]) == 0
    assert instruct["llm_prompt_text"].tolist() == frontend.tokenizer.encode("Speak slowly.<|endofprompt|>")


def test_prompt_features_are_cached_by_audio_and_transcript(encoder: RequestEncoder) -> None:
    encoder.encode(request(request_id="1"))
    encoder.encode(request(request_id="2", text="Something else."))
    assert len(encoder.cache) == 1
    encoder.encode(request(request_id="3", prompt_text="another transcript"))
    assert len(encoder.cache) == 2


def test_registered_voice_is_used_by_id(encoder: RequestEncoder, tmp_path: Path) -> None:
    voice = VoiceRegistry(tmp_path).create("narrator", "a prompt", PROMPT)
    by_voice = encoder.encode(request(prompt_wav=None, prompt_text="", voice_id=voice.id))[1]
    by_upload = encoder.encode(request())[1]
    assert len(encoder.cache) == 1  # the same audio and transcript: one entry
    assert by_voice["llm_prompt_text"].tolist() == by_upload["llm_prompt_text"].tolist()


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"mode": "singing"}, 400, "unknown mode 'singing'; choose one of zero_shot, cross_lingual, instruct2"),
        ({"text": "  "}, 400, "text is empty"),
        ({"text": "a" * 61}, 400, "text has 61 characters; the limit is 60"),
        ({"prompt_wav": b"RIFF junk"}, 400, "could not read the audio"),
        ({"prompt_wav": tone(1.5, sample_rate=8000)}, 400, "sample rate 8000 Hz is too low"),
        ({"prompt_wav": tone(4.0)}, 400, "audio is 4.0 s long; the limit is 3 s"),
        ({"prompt_text": ""}, 400, "zero-shot synthesis needs the transcript of the prompt audio"),
        ({"prompt_wav": None}, 400, "no voice prompt"),
        ({"mode": "instruct2"}, 400, "instruct_text is empty"),
        ({"speed": 3.0, "stream": False}, 400, "speed must be between 0.5 and 2.0"),
        ({"speed": 1.5}, 400, "speed can only be changed without streaming"),
        ({"num_tokens": 0}, 400, "num_tokens must be at least 1"),
        ({"voice_id": "voice-0123456789abcdef"}, 404, "voice 'voice-0123456789abcdef' is not registered"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(encoder: RequestEncoder, fields, status, message) -> None:
    with pytest.raises(RequestError) as refused:
        encoder.encode(request(**fields))
    assert refused.value.status == status
    assert message in refused.value.message
