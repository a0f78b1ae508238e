"""LightTTS-compatible synthesis: multipart forms in, raw PCM (or WAV) out.

Field names are LightTTS's, plus the aliases of the A10 deployment guide (`text`,
`prompt_audio`, `streaming`). `tts_model_name` and `language` are accepted and ignored: one
model is served, and it reads the language from the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from ..audio import AudioFormat
from ..checks import MAX_NUM_TOKENS, MAX_SEED, NUM_TOKENS_HELP, check_prompt_audio, check_speed, check_text, required
from ..responses import AUDIO_RESPONSES, AudioResponse
from ..state import SYNTHESIS_TAG, State

router = APIRouter(tags=[SYNTHESIS_TAG])

@dataclass(frozen=True)
class LightTTSForm:
    text: str | None
    prompt_text: str
    prompt_wav: UploadFile | None
    instruct_text: str
    stream: bool
    speed: float
    seed: int | None
    num_tokens: int | None
    audio_format: AudioFormat


def lighttts_form(
    tts_text: Annotated[str | None, Form(description="The text to speak.")] = None,
    text: Annotated[str | None, Form(description="Alias of `tts_text`.")] = None,
    prompt_text: Annotated[str, Form(description="Transcript of the prompt audio (zero-shot).")] = "",
    prompt_wav: Annotated[
        UploadFile | None, File(description="The voice to clone: 0.5-30 s of audio, at least 16 kHz.")
    ] = None,
    prompt_audio: Annotated[UploadFile | None, File(description="Alias of `prompt_wav`.")] = None,
    instruct_text: Annotated[str, Form(description="The instruction (instruct2), e.g. a dialect or mood.")] = "",
    stream: Annotated[bool | None, Form(description="Stream the audio as it is synthesised.")] = None,
    streaming: Annotated[bool | None, Form(description="Alias of `stream`.")] = None,
    speed: Annotated[float, Form(description="0.5 to 2.0; only without streaming.")] = 1.0,
    seed: Annotated[int | None, Form(ge=0, le=MAX_SEED, description="Makes the sampling reproducible.")] = None,
    num_tokens: Annotated[int | None, Form(ge=1, le=MAX_NUM_TOKENS, description=NUM_TOKENS_HELP)] = None,
    audio_format: Annotated[str, Form(alias="format", description="`pcm` (raw samples) or `wav`.")] = "pcm",
    tts_model_name: Annotated[str | None, Form(description="Accepted and ignored (one model).")] = None,
    language: Annotated[str | None, Form(description="Accepted and ignored (read from the text).")] = None,
) -> LightTTSForm:
    del tts_model_name, language  # declared so that the schema documents them
    return LightTTSForm(
        text=tts_text if tts_text is not None else text,
        prompt_text=prompt_text,
        prompt_wav=prompt_wav or prompt_audio,
        instruct_text=instruct_text,
        stream=bool(stream if stream is not None else streaming),
        speed=speed,
        seed=seed,
        num_tokens=num_tokens,
        audio_format=AudioFormat.parse(audio_format, "format"),
    )


Fields = Annotated[LightTTSForm, Depends(lighttts_form)]


async def _synthesize(request: Request, state: State, mode: str, form: LightTTSForm) -> AudioResponse:
    limits = state.config.limits
    text = check_text(form.text, field="tts_text", max_chars=limits.max_text_chars)
    if mode == "zero_shot":
        required(form.prompt_text, "prompt_text", "the transcript of prompt_wav, which zero-shot cloning continues")
    if mode == "instruct2":
        required(form.instruct_text, "instruct_text", "how to speak, e.g. 'Speak cheerfully.'")
    speed = check_speed(form.speed, stream=form.stream)
    upload = await form.prompt_wav.read() if form.prompt_wav is not None else None
    prompt = check_prompt_audio(upload, field="prompt_wav", max_seconds=limits.max_prompt_seconds)
    job = await state.start(
        request,
        mode=mode,
        text=text,
        prompt_text=form.prompt_text,
        instruct_text=form.instruct_text,
        prompt_wav=prompt.data,
        stream=form.stream,
        speed=speed,
        seed=form.seed,
        num_tokens=form.num_tokens,
    )
    return AudioResponse(job, form.audio_format, stream=form.stream)


@router.post("/inference_zero_shot", responses=AUDIO_RESPONSES)
async def inference_zero_shot(request: Request, state: State, form: Fields) -> AudioResponse:
    """Clone the voice of `prompt_wav`, whose transcript is `prompt_text`, to speak `tts_text`."""
    return await _synthesize(request, state, "zero_shot", form)


@router.post("/inference_cross_lingual", responses=AUDIO_RESPONSES)
async def inference_cross_lingual(request: Request, state: State, form: Fields) -> AudioResponse:
    """Speak `tts_text` in the voice of `prompt_wav`, whatever the prompt's language (no transcript)."""
    return await _synthesize(request, state, "cross_lingual", form)


@router.post("/inference_instruct2", responses=AUDIO_RESPONSES)
async def inference_instruct2(request: Request, state: State, form: Fields) -> AudioResponse:
    """Speak `tts_text` in the voice of `prompt_wav`, following `instruct_text`."""
    return await _synthesize(request, state, "instruct2", form)
