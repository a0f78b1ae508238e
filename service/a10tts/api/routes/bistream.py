"""`WS /inference_zero_shot_bistream`: text in pieces in, streamed audio out (docs/api.md).

Client -> server, JSON text messages: one `start` (the voice), then any number of `text`
pieces, then `end`. Server -> client: for each sentence a JSON `sentence` event followed by its
PCM as binary messages, then `done` and a normal close. A failure sends an `error` event and
closes with code 4000 + the HTTP status it would have had (e.g. 4400, 4503).

The pipeline synthesises whole texts, so text is buffered until a sentence is complete; the
next sentence is already submitted while the current one streams, and audio is sent in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..checks import MAX_SEED, check_prompt_audio
from ..errors import ApiError, validation_error
from ..sentences import SentenceBuffer
from ..state import ApiState, State
from ..synthesis import CLIENT_CLOSED, OK, Arrival, Job
from ..tasks import cancel_all

log = logging.getLogger(__name__)

router = APIRouter()

MAX_SENTENCE_CHARS = 300
PENDING_SENTENCES = 1  # submitted ahead of the one streaming


class Start(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["start"]
    mode: Literal["zero_shot", "cross_lingual", "instruct2"] = "zero_shot"
    prompt_text: str = ""
    prompt_wav: str | None = None  # base64 of the audio file
    voice: str | None = None  # or a registered voice, by id or name
    instruct_text: str = ""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class Text(BaseModel):
    type: Literal["text"]
    text: str


class End(BaseModel):
    type: Literal["end"]


ClientMessage = TypeAdapter(Annotated[Start | Text | End, Field(discriminator="type")])


class BistreamSession:
    def __init__(self, websocket: WebSocket, state: ApiState) -> None:
        self.websocket = websocket
        self.state = state
        self.jobs: list[Job] = []
        limit = state.config.limits.max_text_chars
        self.sentences = SentenceBuffer(max_chars=min(MAX_SENTENCE_CHARS, limit))
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=PENDING_SENTENCES)

    async def run(self) -> None:
        try:
            fields = await self._voice(await self._receive(Start))
            reading = asyncio.ensure_future(self._read_text(fields))
            writing = asyncio.ensure_future(self._write_audio())
            try:
                done, _ = await asyncio.wait((reading, writing), return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # the first failure ends the session
            finally:
                await cancel_all(reading, writing)
            await self.websocket.close()
        except ApiError as error:
            await self._fail(error)
        except WebSocketDisconnect:
            log.info("bistream client disconnected")
        finally:
            for job in self.jobs:
                job.finish(CLIENT_CLOSED)  # no-op for the sentences that completed

    async def _receive(self, *expected: type[BaseModel]) -> Any:
        idle_limit = self.state.config.limits.request_timeout_seconds
        try:
            message = await asyncio.wait_for(self.websocket.receive(), idle_limit)
        except asyncio.TimeoutError:
            reason = f"no message for {idle_limit:g} s (limits.request_timeout_seconds)"
            raise ApiError(408, "timeout", reason) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("text") is None:
            raise ApiError(400, "invalid_message", "send JSON text messages; binary messages are not accepted")
        try:
            parsed = ClientMessage.validate_json(message["text"])
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None
        if not isinstance(parsed, expected):
            raise ApiError(
                422, "invalid_message", f"unexpected {parsed.type!r} message: send start, then text pieces, then end"
            )
        return parsed

    async def _voice(self, start: Start) -> dict[str, Any]:
        """The `SynthesisRequest` fields every sentence shares."""
        fields: dict[str, Any] = {"mode": start.mode, "instruct_text": start.instruct_text, "seed": start.seed}
        if start.mode == "zero_shot" and not start.prompt_text.strip() and start.voice is None:
            raise ApiError(422, "missing_field", "prompt_text is required: the transcript of prompt_wav")
        if start.mode == "instruct2" and not start.instruct_text.strip():
            raise ApiError(422, "missing_field", "instruct_text is required in instruct2 mode")
        if start.voice is not None:
            voice = self.state.voices.find(start.voice)
            if voice is None:
                raise ApiError(404, "voice_not_found", f"voice {start.voice!r} is not registered; see GET /v1/voices")
            return fields | {"voice_id": voice.id, "prompt_text": voice.prompt_text}
        try:
            wav = base64.b64decode(start.prompt_wav or "", validate=True)
        except binascii.Error:
            raise ApiError(400, "invalid_audio", "prompt_wav must be the audio file encoded in base64") from None
        limit = self.state.config.limits.max_prompt_seconds
        prompt = check_prompt_audio(wav, field="prompt_wav", max_seconds=limit)
        return fields | {"prompt_wav": prompt.data, "prompt_text": start.prompt_text}

    async def _read_text(self, fields: dict[str, Any]) -> None:
        while True:
            message = await self._receive(Text, End)
            final = isinstance(message, End)
            for sentence in self.sentences.flush() if final else self.sentences.feed(message.text):
                job = await self.state.synthesizer.start(Arrival.now(), text=sentence, stream=True, **fields)
                self.jobs.append(job)
                await self.queue.put(job)
            if final:
                await self.queue.put(None)
                return

    async def _write_audio(self) -> None:
        index = 0
        while (job := await self.queue.get()) is not None:
            await self.websocket.send_json({"type": "sentence", "index": index, "text": job.request.text})
            try:
                async for pcm in job.audio():
                    await self.websocket.send_bytes(pcm)
                    job.sent(len(pcm))
            except ApiError as error:
                job.finish(error.status)
                raise
            job.finish(OK)
            index += 1
        await self.websocket.send_json({"type": "done", "sentences": index})

    async def _fail(self, error: ApiError) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.websocket.send_json({"type": "error", **error.body()})
            await self.websocket.close(code=4000 + error.status, reason=error.code)


@router.websocket("/inference_zero_shot_bistream")
async def inference_zero_shot_bistream(websocket: WebSocket, state: State) -> None:
    await websocket.accept()
    await BistreamSession(websocket, state).run()
