"""Cheap checks of a synthesis request, made in the HTTP worker before the pipeline sees it.

The audio check reads only the file header (no decoding, no torch in the HTTP workers); the
encode stage decodes the prompt and checks it in depth, and its errors come back to the client
in the same JSON shape. The limits equal the engine's (`a10tts.engine.features.load_audio`,
`FrontendLimits`); a unit test keeps them equal.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import soundfile

from .errors import ApiError

MIN_PROMPT_SAMPLE_RATE = 16000
MIN_PROMPT_SECONDS = 0.5
MIN_SPEED, MAX_SPEED = 0.5, 2.0
MAX_SEED = 2**63 - 1  # fits every integer type on the way (msgpack, torch.Generator)
MAX_NUM_TOKENS = 32768  # llm.max_request_tokens' own bound; the LM refuses what its slots cannot hold
NUM_TOKENS_HELP = ("Exactly this many speech tokens per sentence (25 per second of audio), stop tokens ignored: "
                   "for benchmarks on random weights, which never stop on their own.")
AUDIO_HINT = "send a WAV, FLAC or OGG recording of 0.5 to {max:g} s, sampled at 16 kHz or more"


@dataclass(frozen=True)
class PromptAudio:
    data: bytes  # the file as uploaded; the encode stage decodes it
    sample_rate: int
    seconds: float


def required(value: str | None, field: str, why: str) -> str:
    if value is None or not value.strip():
        raise ApiError(422, "missing_field", f"{field} is required: {why}")
    return value


def check_text(text: str | None, *, field: str, max_chars: int) -> str:
    if text is None:
        raise ApiError(422, "missing_field", f"{field} is required: the text to speak")
    if not text.strip():
        raise ApiError(422, "text_empty", f"{field} is empty; send the text to speak")
    if len(text) > max_chars:
        raise ApiError(
            422,
            "text_too_long",
            f"{field} has {len(text)} characters; the limit is {max_chars} (limits.max_text_chars): "
            "split the text into several requests",
        )
    return text


def check_speed(speed: float, *, stream: bool) -> float:
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ApiError(422, "invalid_speed", f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed:g}")
    if stream and speed != 1.0:
        raise ApiError(
            422, "invalid_speed", "speed can only be changed without streaming: send stream=false or speed=1"
        )
    return speed


def check_prompt_audio(data: bytes | None, *, field: str, max_seconds: float) -> PromptAudio:
    """The uploaded prompt's header: readable audio, sample rate and length within the limits."""
    hint = AUDIO_HINT.format(max=max_seconds)
    if not data:
        raise ApiError(422, "missing_field", f"{field} is required: {hint}")
    try:
        info = soundfile.info(io.BytesIO(data))
    except RuntimeError as exc:  # soundfile's LibsndfileError: not audio, or a format it cannot read
        raise ApiError(400, "invalid_audio", f"{field} could not be read as audio ({exc}); {hint}") from None
    if info.samplerate < MIN_PROMPT_SAMPLE_RATE:
        raise ApiError(
            400,
            "sample_rate_too_low",
            f"{field} is sampled at {info.samplerate} Hz; at least {MIN_PROMPT_SAMPLE_RATE} Hz is required",
        )
    if info.frames <= 0:
        raise ApiError(400, "invalid_audio", f"{field} holds no audio; {hint}")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise ApiError(
            400,
            "prompt_too_long",
            f"{field} is {seconds:.1f} s long; the limit is {max_seconds:g} s (limits.max_prompt_seconds): "
            "cut the recording",
        )
    if seconds < MIN_PROMPT_SECONDS:
        raise ApiError(
            400, "prompt_too_short", f"{field} is {seconds:.2f} s long; at least {MIN_PROMPT_SECONDS:g} s is required"
        )
    return PromptAudio(data, info.samplerate, seconds)
