"""OpenAI-style `POST /v1/audio/speech` with a voice from the registry.

`model` is accepted and ignored (one model is served). The voice decides the mode: zero-shot
when it has a transcript, cross-lingual without one, instruct2 when `instructions` are given.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..audio import AudioFormat
from ..checks import MAX_NUM_TOKENS, MAX_SEED, NUM_TOKENS_HELP, check_speed, check_text
from ..errors import ApiError
from ..responses import AUDIO_RESPONSES, AudioResponse
from ..state import SYNTHESIS_TAG, State

router = APIRouter(tags=[SYNTHESIS_TAG])


class SpeechRequest(BaseModel):
    model: str = Field("CosyVoice2-0.5B", description="Accepted and ignored: one model is served.")
    input: str = Field(description="The text to speak.")
    voice: str = Field(description="Id or name of a voice registered with POST /v1/voices.")
    instructions: str = Field("", description="How to speak (instruct2 mode), e.g. 'Speak slowly.'")
    response_format: str = Field("wav", description="`wav` or `pcm` (16-bit little-endian mono 24 kHz).")
    speed: float = Field(1.0, description="0.5 to 2.0; only without streaming.")
    stream: bool = Field(False, description="Send the audio as it is synthesised (chunked).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Makes the sampling reproducible.")
    num_tokens: int | None = Field(None, ge=1, le=MAX_NUM_TOKENS, description=NUM_TOKENS_HELP)


@router.post("/v1/audio/speech", responses=AUDIO_RESPONSES)
async def speech(body: SpeechRequest, request: Request, state: State) -> AudioResponse:
    """Speak `input` in a registered voice."""
    audio_format = AudioFormat.parse(body.response_format, "response_format")
    text = check_text(body.input, field="input", max_chars=state.config.limits.max_text_chars)
    speed = check_speed(body.speed, stream=body.stream)
    voice = state.voices.find(body.voice)
    if voice is None:
        raise ApiError(
            404,
            "voice_not_found",
            f"voice {body.voice!r} is not registered; list voices with GET /v1/voices or add one with POST /v1/voices",
        )
    mode = "zero_shot" if voice.prompt_text.strip() else "cross_lingual"
    if body.instructions.strip():
        mode = "instruct2"
    job = await state.start(
        request,
        mode=mode,
        text=text,
        voice_id=voice.id,
        prompt_text=voice.prompt_text,
        instruct_text=body.instructions,
        stream=body.stream,
        speed=speed,
        seed=body.seed,
        num_tokens=body.num_tokens,
    )
    return AudioResponse(job, audio_format, stream=body.stream)
