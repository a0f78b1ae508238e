"""The HTTP response of a synthesis request: a job's audio as PCM or WAV, whole or streamed.

The status line waits for the first audio, so anything the pipeline rejects before producing
audio (a prompt it cannot decode, overload) is still a JSON error with its own status. A
failure after audio went out cannot change the status any more: the connection is closed
without the final chunk, which every HTTP client reports as an incomplete body. The headers
say where the time to first audio went (``Server-Timing``).
A client that disconnects cancels the request in the pipeline at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .audio import AudioFormat, audio_headers, wav_header
from .errors import ERROR_RESPONSES, ApiError
from .synthesis import CLIENT_CLOSED, OK, Job
from .tasks import cancel_all

log = logging.getLogger(__name__)

# The OpenAPI description of a synthesis route's responses.
AUDIO_RESPONSES = {
    200: {
        "description": "16-bit little-endian mono PCM at 24 kHz, or WAV; chunked as it is synthesised when "
        "streaming",
        "content": {"application/octet-stream": {}, "audio/wav": {}},
    },
    **ERROR_RESPONSES,
}


class AudioResponse(Response):
    """A Response (so FastAPI passes it through) that sends its own status, headers and body."""

    def __init__(self, job: Job, audio_format: AudioFormat, *, stream: bool) -> None:
        super().__init__(media_type=audio_format.media_type)
        self.job = job
        self.audio_format = audio_format
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        responding = asyncio.ensure_future(self._respond(scope, receive, send))
        client_gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((responding, client_gone), return_when=asyncio.FIRST_COMPLETED)
            if responding.done():
                responding.result()
            else:
                log.info("request %s: client disconnected; cancelling", self.job.id)
        except Exception:
            self.job.finish(500)
            raise
        finally:
            await cancel_all(responding, client_gone)
            self.job.finish(CLIENT_CLOSED)  # no-op unless the request was left unfinished

    def _start(self, first: bytes) -> dict:
        """The status line and headers, sent with ``first``, the first audio."""
        headers = audio_headers(self.audio_format) | {"X-Request-Id": self.job.id}
        if first and (timing := server_timing(self.job.first_audio_phases())):
            headers["Server-Timing"] = timing
        return {
            "type": "http.response.start",
            "status": OK,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        pieces = self.job.audio()
        try:
            first = await anext(pieces, b"") if self.stream else b"".join([pcm async for pcm in pieces])
        except ApiError as error:
            self.job.finish(error.status)
            await error.response()(scope, receive, send)
            return
        wav = self.audio_format is AudioFormat.WAV
        await send(self._start(first))
        if not self.stream:
            await self._send_audio(send, wav_header(len(first)) if wav else b"", first, more=False)
            self.job.finish(OK)
            return
        await self._send_audio(send, wav_header(None) if wav else b"", first)
        try:
            async for pcm in pieces:
                await self._send_audio(send, b"", pcm)
        except ApiError as error:
            # Returning without the final body message makes the server close the connection.
            log.warning("request %s failed after its audio started (%s); closing the stream", self.job.id, error)
            self.job.finish(error.status)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.job.finish(OK)

    async def _send_audio(self, send: Send, header: bytes, pcm: bytes, *, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": header + pcm, "more_body": more})
        self.job.sent(len(pcm))


def server_timing(phases_s: Mapping[str, float]) -> str:
    """A ``Server-Timing`` header value (W3C) of where the time to first audio went:
    ``encode;dur=4.1, lm_first_token;dur=7.0, ...`` in milliseconds, the phases of
    ``pipeline/first_audio.py``."""
    return ", ".join(f"{name};dur={1000 * seconds:.1f}" for name, seconds in phases_s.items())


async def _wait_for_disconnect(receive: Receive) -> None:
    # The body was read while parsing the form, so the next message is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass
