"""Just-in-time LM work for streaming requests (``llm.stream_buffer_seconds``), and a pause after
each one's first chunk (``llm.stream_first_chunk_hold_ms``).

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

The price is that a streaming request then lasts about as long as its audio, holding its KV slot
that long. The hold alone costs far less: for ``first_chunk_hold`` after its first chunk's
tokens a streaming request takes no step of its own, so that, when nothing else runs, the first
chunk's vocoding has the GPU to itself instead of sharing it with the rest of the request. It
still joins the steps taken for other requests: sitting those out, too, cost an H100 a quarter
of its audio per second at 16 streams (more, smaller LM steps for the same tokens).
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
    def __init__(self, buffer_seconds: float, first_chunk_hold: float = 0.0) -> None:
        self.buffer_seconds = buffer_seconds
        self.first_chunk_hold = first_chunk_hold

    def ahead(self, request: Paced, now: float) -> float | None:
        """Seconds of audio the request's tokens make beyond what its listener has heard; None
        if it is not paced (pacing off, not streaming, or before its first chunk's tokens)."""
        if not (self.buffer_seconds and request.stream) or request.first_chunk_done_at is None:
            return None
        return request.emitted / SPEECH_TOKENS_PER_SECOND - (now - request.first_chunk_done_at)

    def held_for(self, request: Paced, now: float) -> float:
        """Seconds the request still sits out after its first chunk's tokens (``first_chunk_hold``)."""
        if not request.stream or request.first_chunk_done_at is None:
            return 0.0
        return max(0.0, request.first_chunk_done_at + self.first_chunk_hold - now)

    def is_due(self, request: Paced, now: float) -> bool:
        """Whether the request runs this step on its own account (updates its catching-up state)."""
        if self.held_for(request, now):
            return False
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
        if self.held_for(request, now):
            return True  # the hold frees the GPU only when nothing else runs: a row more costs nothing
        ahead = self.ahead(request, now)
        return ahead is not None and ahead < self.buffer_seconds + CATCH_UP_SECONDS

    def wait(self, request: Paced, now: float) -> float:
        """Seconds until the request is due: 0 if it is now or is not paced."""
        ahead = self.ahead(request, now)
        behind = 0.0 if ahead is None or request.catching_up else max(0.0, ahead - self.buffer_seconds)
        return max(self.held_for(request, now), behind)
