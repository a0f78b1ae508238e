"""Just-in-time LM work for streaming requests (``llm.stream_buffer_seconds``), and a pause after
each one's first chunk (``llm.stream_first_chunk_hold_ms``).

The LM and the decode stage share one GPU, and the LM is far faster than real time: unpaced, it
runs a streaming request's every token while that request's first chunk, and other requests'
chunks, are being vocoded beside it. A listener needs the next chunk's audio only when the audio
of the chunks before it runs out. So once a request has its first chunk's tokens, the pacer
follows its chunks as the decode stage cuts them (``streaming.ChunkPlan``: hops of 25, 50, then
100 tokens): the listener is taken to start when the first chunk's tokens are done (a lower
bound, as vocoding comes first), and the request sits out steps until the audio of its complete
chunks is less than ``buffer_seconds`` ahead of the listener. It is then due, and runs until its
next chunk is complete, a burst of up to 100 steps. Pacing by chunks, not tokens, matters: a
request kept a fixed time ahead in tokens starves a 4-second hop that needs all its tokens first.

A step that is taken anyway also takes every paced request that would be due within
``JOIN_SECONDS``, as a decode step costs about the same for one row as for dozens; so paced
requests fall into step with each other and the LM takes a burst of steps about once a chunk.

The price is that a streaming request then lasts about as long as its audio, holding its KV slot
that long; so while a request waits for a slot the scheduler paces nobody. The hold alone costs
far less: for ``first_chunk_hold`` after its first chunk's tokens a streaming request takes no
step of its own, so that, when nothing else runs, the first chunk's vocoding has the GPU to
itself instead of sharing it with the rest of the request. It still joins the steps taken for
other requests: sitting those out, too, cost an H100 a quarter of its audio per second at 16
streams (more, smaller LM steps for the same tokens).
"""

from __future__ import annotations

from typing import Protocol

SPEECH_TOKENS_PER_SECOND = 25  # CosyVoice2: 50 Hz mel, 2 mel frames per speech token
JOIN_SECONDS = 1.0


class Paced(Protocol):
    stream: bool
    first_chunk_done_at: float | None  # scheduler clock; None until it has its first chunk's tokens

    @property
    def vocodable_tokens(self) -> int:  # tokens of its complete chunks, all segments
        ...


class StreamPacer:
    def __init__(self, buffer_seconds: float, first_chunk_hold: float = 0.0) -> None:
        self.buffer_seconds = buffer_seconds
        self.first_chunk_hold = first_chunk_hold

    def ahead(self, request: Paced, now: float) -> float | None:
        """Seconds of audio the request's complete chunks hold beyond what its listener has
        heard; None if it is not paced (pacing off, not streaming, or before its first chunk)."""
        if not (self.buffer_seconds and request.stream) or request.first_chunk_done_at is None:
            return None
        return request.vocodable_tokens / SPEECH_TOKENS_PER_SECOND - (now - request.first_chunk_done_at)

    def held_for(self, request: Paced, now: float) -> float:
        """Seconds the request still sits out after its first chunk's tokens (``first_chunk_hold``)."""
        if not request.stream or request.first_chunk_done_at is None:
            return 0.0
        return max(0.0, request.first_chunk_done_at + self.first_chunk_hold - now)

    def is_due(self, request: Paced, now: float) -> bool:
        """Whether the request runs this step on its own account."""
        if self.held_for(request, now):
            return False
        ahead = self.ahead(request, now)
        return ahead is None or ahead < self.buffer_seconds

    def may_join(self, request: Paced, now: float) -> bool:
        """Whether a paced request that is not due joins a step taken for others."""
        if self.held_for(request, now):
            return True  # the hold frees the GPU only when nothing else runs: a row more costs nothing
        ahead = self.ahead(request, now)
        return ahead is not None and ahead < self.buffer_seconds + JOIN_SECONDS

    def wait(self, request: Paced, now: float) -> float:
        """Seconds until the request is due: 0 if it is now or is not paced."""
        ahead = self.ahead(request, now)
        behind = 0.0 if ahead is None else max(0.0, ahead - self.buffer_seconds)
        return max(self.held_for(request, now), behind)
