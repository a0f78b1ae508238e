"""The voice registry over HTTP: upload a prompt once, then use it by id or name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ...voices import InvalidVoice, VoiceExists, VoiceInfo
from ..checks import check_prompt_audio, required
from ..errors import ERROR_RESPONSES, ApiError, ErrorBody
from ..state import State

router = APIRouter(tags=["voices"], responses=ERROR_RESPONSES)


def voice_json(voice: VoiceInfo) -> dict[str, Any]:
    return {
        "id": voice.id,
        "object": "voice",
        "name": voice.name,
        "prompt_text": voice.prompt_text,
        "created_at": voice.created,
    }


def _find(state: State, voice: str) -> VoiceInfo:
    found = state.voices.find(voice)
    if found is None:
        raise ApiError(404, "voice_not_found", f"voice {voice!r} is not registered; see GET /v1/voices")
    return found


@router.post(
    "/v1/voices",
    status_code=201,
    responses={409: {"model": ErrorBody, "description": "A voice with this name exists"}},
)
async def create_voice(
    state: State,
    name: Annotated[str | None, Form(description="A unique name, usable instead of the id.")] = None,
    prompt_wav: Annotated[UploadFile | None, File(description="0.5-30 s of the voice, at least 16 kHz.")] = None,
    prompt_text: Annotated[
        str, Form(description="Transcript of the recording; without it the voice speaks cross-lingually.")
    ] = "",
) -> dict[str, Any]:
    """Register a voice prompt; synthesis requests then name it in `voice`."""
    name = required(name, "name", "a unique name for the voice")
    upload = await prompt_wav.read() if prompt_wav is not None else None
    prompt = check_prompt_audio(upload, field="prompt_wav", max_seconds=state.config.limits.max_prompt_seconds)
    try:
        voice = await run_in_threadpool(state.voices.create, name, prompt_text, prompt.data)
    except VoiceExists as exc:
        raise ApiError(409, "voice_exists", str(exc)) from None
    except InvalidVoice as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    return voice_json(voice)


@router.get("/v1/voices")
async def list_voices(state: State) -> dict[str, Any]:
    """Every registered voice, oldest first."""
    return {"object": "list", "data": [voice_json(voice) for voice in state.voices.list()]}


@router.get("/v1/voices/{voice}")
async def get_voice(voice: str, state: State) -> dict[str, Any]:
    """One voice, by id or name."""
    return voice_json(_find(state, voice))


@router.delete("/v1/voices/{voice}")
async def delete_voice(voice: str, state: State) -> dict[str, Any]:
    """Remove a voice, by id or name."""
    found = _find(state, voice)
    if not await run_in_threadpool(state.voices.delete, found.id):
        raise ApiError(404, "voice_not_found", f"voice {voice!r} is not registered; see GET /v1/voices")
    return {"id": found.id, "object": "voice.deleted", "deleted": True}
