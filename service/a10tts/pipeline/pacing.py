"""Just-in-time LM work for streaming requests (``llm.stream_buffer_seconds``).

The LM and the decode stage share one GPU, and the LM is far faster than real time: unpaced, it
runs a streaming request's every token while that request's first chunk, and other requests'
chunks, are being vocoded beside it. A streaming request needs its next chunk's tokens only
before its listener runs out of audio, so once it has its first chunk's tokens the pacer lets it
sit out steps while the audio of its tokens is more than ``buffer_seconds`` ahead of the
listener (who is taken to start listening when the first chunk's tokens are done: a lower
bound, as vocoding comes first). When it falls to that mark the request is due: it runs until
it is ``CATCH_UP_SECONDS`` further ahead, one streamed chunk. A step that is taken anyway also
takes every paced request less than that far ahead, as a decode step costs about the same for
one row as for dozens; so paced requests fall into step with each other and the LM takes a
burst of steps about once a chunk instead of a step every few milliseconds.
"""

from __future__ import annotations

from typing import Protocol

SPEECH_TOKENS_PER_SECOND = 25  # CosyVoice2: 50 Hz mel, 2 mel frames per speech token
CATCH_UP_SECONDS = 1.0  # one streamed chunk of 25 tokens


class Paced(Protocol):
    stream: bool
    emitted: int  # tokens so far, all segments
    first_chunk_done_at: float | None  # scheduler clock; None until it has its first chunk's tokens
    catching_up: bool


class StreamPacer:
    def __init__(self, buffer_seconds: float) -> None:
        self.buffer_seconds = buffer_seconds

    def ahead(self, request: Paced, now: float) -> float | None:
        """Seconds of audio the request's tokens make beyond what its listener has heard; None
        if it is not paced (pacing off, not streaming, or before its first chunk's tokens)."""
        if not (self.buffer_seconds and request.stream) or request.first_chunk_done_at is None:
            return None
        return request.emitted / SPEECH_TOKENS_PER_SECOND - (now - request.first_chunk_done_at)

    def is_due(self, request: Paced, now: float) -> bool:
        """Whether the request runs this step on its own account (updates its catching-up state)."""
        ahead = self.ahead(request, now)
        if ahead is None:
            return True
        if ahead < self.buffer_seconds:
            request.catching_up = True
        elif ahead >= self.buffer_seconds + CATCH_UP_SECONDS:
            request.catching_up = False
        return request.catching_up

    def may_join(self, request: Paced, now: float) -> bool:
        """Whether a paced request that is not due joins a step taken for others."""
        ahead = self.ahead(request, now)
        return ahead is not None and ahead < self.buffer_seconds + CATCH_UP_SECONDS

    def wait(self, request: Paced, now: float) -> float:
        """Seconds until the request is due: 0 if it is now or is not paced."""
        ahead = self.ahead(request, now)
        if ahead is None or request.catching_up:
            return 0.0
        return max(0.0, ahead - self.buffer_seconds)
