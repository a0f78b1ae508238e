"""A small in-memory stand-in for the pipeline and request helpers (unit tests of the API only)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import soundfile

from a10tts.api.synthesis import PipelineEvent, PipelineUnavailable
from a10tts.pipeline.messages import AudioChunk, RequestDone, RequestFailed, StatusSnapshot, SynthesisRequest

CHUNKS = 3
CHUNK_BYTES = 4800  # 0.1 s of 24 kHz int16


def chunk_pcm(seq: int) -> bytes:
    return bytes([seq + 1]) * CHUNK_BYTES


def audio_for(request: SynthesisRequest) -> list[PipelineEvent]:
    """What the fake pipeline answers: CHUNKS chunks of recognisable PCM, or a stage's failure."""
    if request.text.startswith("FAIL"):
        return [RequestFailed(request.request_id, 400, "prompt audio is too quiet to use")]
    if request.text.startswith("MIDWAY"):
        return [AudioChunk(request.request_id, 0, chunk_pcm(0), False), RequestFailed(request.request_id, 500, "boom")]
    if request.text.startswith("HANG"):
        return [AudioChunk(request.request_id, 0, chunk_pcm(0), False)]  # and then nothing
    return [AudioChunk(request.request_id, seq, chunk_pcm(seq), seq == CHUNKS - 1) for seq in range(CHUNKS)]


def ready_snapshot(**requests: int) -> StatusSnapshot:
    status = {"state": "ready", "ready": True, "profile": "balanced", "requests": requests}
    return StatusSnapshot(ready=True, state="ready", status=status)


class FakePipeline:
    def __init__(self) -> None:
        self.snapshot: StatusSnapshot | None = ready_snapshot(running=0, waiting=0)
        self.accepting = True
        self.submitted: list[SynthesisRequest] = []
        self.cancelled: list[str] = []
        self.released: list[str] = []
        self.reports: list[RequestDone] = []
        self.routes: set[str] = set()

    @property
    def in_flight(self) -> int:
        return len(self.routes)

    async def submit(self, request: SynthesisRequest) -> asyncio.Queue[PipelineEvent]:
        if not self.accepting:
            raise PipelineUnavailable("no encode worker is connected")
        self.submitted.append(request)
        self.routes.add(request.request_id)
        events: asyncio.Queue[PipelineEvent] = asyncio.Queue()
        for event in audio_for(request):
            events.put_nowait(event)
        return events

    def cancel(self, request_id: str) -> None:
        self.routes.discard(request_id)
        self.cancelled.append(request_id)

    def release(self, request_id: str) -> None:
        self.routes.discard(request_id)
        self.released.append(request_id)

    def report(self, done: RequestDone) -> None:
        self.reports.append(done)


def wav_bytes(seconds: float = 1.0, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    soundfile.write(out, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, format="WAV")
    return out.getvalue()


PROMPT = wav_bytes()


def zero_shot_form(**overrides: object) -> tuple[dict, dict]:
    """(data, files) of a valid zero-shot request, with fields replaced or removed (None)."""
    data = {"tts_text": "Hello there.", "prompt_text": "A prompt transcript.", "stream": "false"}
    files = {"prompt_wav": ("prompt.wav", PROMPT, "audio/wav")}
    for key, value in overrides.items():
        target = files if key in ("prompt_wav", "prompt_audio") else data
        if value is None:
            target.pop(key, None)
        else:
            target[key] = ("p.wav", value, "audio/wav") if target is files else value
    return data, files
