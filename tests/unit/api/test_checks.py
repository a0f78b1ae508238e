"""The HTTP worker's cheap prompt check agrees with the engine's loader and limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from a10tts.api import checks
from a10tts.api.errors import ApiError
from a10tts.engine import features
from a10tts.engine.frontend import FrontendLimits
from a10tts.pipeline import encode_worker
from api_fakes import wav_bytes


def test_limits_equal_the_engines():
    assert checks.MIN_PROMPT_SAMPLE_RATE == features.MIN_SAMPLE_RATE
    assert FrontendLimits().min_prompt_seconds == checks.MIN_PROMPT_SECONDS
    assert (checks.MIN_SPEED, checks.MAX_SPEED) == (encode_worker.MIN_SPEED, encode_worker.MAX_SPEED)


def flac_bytes(seconds: float, rate: int) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.zeros(int(seconds * rate), dtype=np.float32), rate, format="FLAC")
    return out.getvalue()


CASES = {
    "wav 24 kHz": (wav_bytes(1.0), None),
    "flac 16 kHz": (flac_bytes(2.0, 16000), None),
    "not audio": (b"hello world, not audio", "invalid_audio"),
    "8 kHz": (wav_bytes(1.0, rate=8000), "sample_rate_too_low"),
    "too long": (wav_bytes(3.5), "prompt_too_long"),
}


@pytest.mark.parametrize("audio, code", CASES.values(), ids=CASES.keys())
def test_the_header_check_and_the_engine_loader_agree(audio, code):
    try:
        prompt = checks.check_prompt_audio(audio, field="prompt_wav", max_seconds=3.0)
    except ApiError as error:
        assert error.code == code and error.status == 400
        with pytest.raises(features.AudioError):
            features.load_audio(audio, max_seconds=3.0)
    else:
        assert code is None
        samples, rate = features.load_audio(audio, max_seconds=3.0)
        assert (prompt.sample_rate, prompt.seconds) == (rate, pytest.approx(len(samples) / rate))
