"""Continuous batching of the speech-token LM: who runs, who waits, one step at a time.

A request waits in a FIFO queue until it is admitted into a KV-cache slot; it then runs its text
segments one after another in that slot, one speech token per step, and leaves when its last
segment ends. Each ``step``:

1. admits waiting requests, if nothing runs or ``schedule_interval_steps`` steps passed since the
   last admission, while a slot is free, fewer than ``max_running`` run, and their prompts fit
   the ``prefill_token_budget`` (a request longer than the budget is admitted alone);
2. prefills the prompts of admitted requests and of running ones starting their next segment
   (one ragged batch), and feeds every other running request its last token (one decode batch);
3. samples one token per row (decode rows in the decode step's CUDA graph) with the request's
   own generator, so a seeded request gives the same tokens alone or in any batch.

With ``stream_buffer_seconds``, streaming requests past their first chunk run each chunk
(``LMRequest.chunks``) just in time and sit out the steps in between, and with
``stream_first_chunk_hold`` they pause right after it (``pacing.StreamPacer``): the GPU time the
LM leaves goes to the decode stage, which shares the GPU. A step with no runnable request is not
taken (``next_step_in`` says when one will be).

Stop tokens are refused before a segment's minimum length; a segment ends on a stop token or
at its maximum (``num_tokens``, when given, fixes both). A segment's prompt plus its tokens must
fit the slot (``max_request_tokens``): requests that cannot are refused when they arrive.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from a10tts.config import Config
from a10tts.engine.kv_cache import KVCache
from a10tts.engine.llm import CosyVoice2LM, TokenBudget
from a10tts.engine.streaming import ChunkPlan

from .pacing import StreamPacer
from .stage import RequestError

PROMPT_MARKERS = 2  # sos and task id around the prompt text


@dataclass(frozen=True)
class SchedulerLimits:
    max_running: int
    max_waiting: int
    prefill_token_budget: int
    schedule_interval_steps: int
    stream_buffer_seconds: float = 0.0  # 0: streaming requests run as fast as they can
    stream_first_chunk_hold: float = 0.0  # seconds

    @classmethod
    def from_config(cls, config: Config) -> SchedulerLimits:
        return cls(
            max_running=config.llm.max_running_requests,
            max_waiting=config.limits.max_waiting_requests,
            prefill_token_budget=config.llm.prefill_token_budget,
            schedule_interval_steps=config.llm.schedule_interval_steps,
            stream_buffer_seconds=config.llm.stream_buffer_seconds,
            stream_first_chunk_hold=config.llm.stream_first_chunk_hold_ms / 1000,
        )


@dataclass(eq=False)
class LMRequest:
    request_id: str
    segments: list[Tensor]  # text ids of each segment, on the model's device
    prompt_text: Tensor  # LM prompt text ids, the same before every segment (may be empty)
    prompt_speech: Tensor  # LM prompt speech tokens (may be empty)
    generator: torch.Generator
    num_tokens: int | None = None  # fixed tokens per segment (benchmarks)
    stream: bool = False  # paced (SchedulerLimits.stream_buffer_seconds)
    chunks: ChunkPlan | None = None  # a stream's current segment, cut as the decode stage cuts it
    first_chunk_done_at: float | None = None  # scheduler clock
    segment: int = 0
    slot: int | None = None
    needs_prefill: bool = True
    history: list[int] = field(default_factory=list)  # tokens of the current segment
    emitted: int = 0  # tokens of all segments so far
    budgets: list[TokenBudget] = field(default_factory=list)  # per segment, set by Scheduler.add

    def prompt_length(self, segment: int) -> int:
        return PROMPT_MARKERS + len(self.prompt_text) + len(self.segments[segment]) + len(self.prompt_speech)

    @property
    def last_segment(self) -> bool:
        return self.segment == len(self.segments) - 1

    @property
    def vocodable_tokens(self) -> int:
        """Tokens the decode stage can vocode without more from the LM: earlier segments' and
        the complete chunks of this one (all of it without ``chunks``)."""
        earlier = self.emitted - len(self.history)
        return earlier + (len(self.history) if self.chunks is None else self.chunks.offset)


@dataclass(frozen=True)
class TokenOutput:
    request_id: str
    segment: int
    tokens: list[int]  # the new token, or none when the segment ended on a stop token
    finished: bool  # the segment's stream ends here
    done: bool  # and it was the request's last segment


@dataclass
class StepResult:
    started: list[LMRequest] = field(default_factory=list)  # admitted: their first tokens follow
    outputs: list[TokenOutput] = field(default_factory=list)
    failed: list[tuple[LMRequest, str]] = field(default_factory=list)  # left the scheduler


class Scheduler:
    def __init__(
        self, model: CosyVoice2LM, cache: KVCache, limits: SchedulerLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.cache = cache
        self.limits = limits
        self.clock = clock
        self.pacer = StreamPacer(limits.stream_buffer_seconds, limits.stream_first_chunk_hold)
        self.waiting: deque[LMRequest] = deque()
        self.running: dict[str, LMRequest] = {}
        self._steps_since_admission = 0

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def next_step_in(self) -> float | None:
        """Seconds until ``step`` has something to do: 0 now, None with no request at all."""
        if not self.has_work:
            return None
        if self.waiting or any(r.needs_prefill for r in self.running.values()):
            return 0.0
        now = self.clock()
        return min((self.pacer.wait(r, now) for r in self.running.values()), default=0.0)

    def _seat_free(self) -> bool:
        return len(self.running) < self.limits.max_running and self.cache.num_free > 0

    def load(self) -> dict[str, float]:
        return {
            "running": len(self.running),
            "waiting": len(self.waiting),
            "kv_used_tokens": sum(self.cache.length(r.slot) for r in self.running.values()),
            "kv_capacity_tokens": self.cache.num_slots * self.cache.capacity,
        }

    def add(self, request: LMRequest) -> None:
        """Queue a new request; RequestError 400 if it can never fit a slot, 503 if the queue is full."""
        request.budgets = [self._budget(request, i) for i in range(len(request.segments))]
        free_seats = min(self.limits.max_running - len(self.running), self.cache.num_free)
        if len(self.waiting) - free_seats >= self.limits.max_waiting:
            raise RequestError(
                503, f"the server is busy: {len(self.waiting)} requests are waiting already; retry later"
            )
        self.waiting.append(request)

    def _budget(self, request: LMRequest, segment: int) -> TokenBudget:
        prompt = request.prompt_length(segment)
        room = self.cache.capacity - prompt
        if request.num_tokens is not None:
            budget = TokenBudget.exactly(request.num_tokens)
        else:
            budget = TokenBudget.for_text(len(request.segments[segment]))
        if budget.min_tokens > room:
            raise RequestError(
                400,
                f"a sentence of this request needs {prompt + budget.min_tokens} LM tokens ({prompt} of "
                f"prompt and text, at least {budget.min_tokens} of speech) but llm.max_request_tokens is "
                f"{self.cache.capacity}; shorten the sentence, the prompt or num_tokens",
            )
        return TokenBudget(budget.min_tokens, min(budget.max_tokens, room))

    def cancel(self, request_id: str) -> LMRequest | None:
        """Forget a request at once, freeing its slot; None if it is not here."""
        request = self.running.pop(request_id, None)
        if request is not None:
            self.cache.free(request.slot)
            return request
        for request in self.waiting:
            if request.request_id == request_id:
                self.waiting.remove(request)
                return request
        return None

    # --- one step ----------------------------------------------------------------------------

    def step(self) -> StepResult:
        result = StepResult()
        decode = self._decode_rows(self.clock())
        if not decode or self._steps_since_admission >= self.limits.schedule_interval_steps:
            self._admit(result)
        self._steps_since_admission += 1
        prefill, embeds = self._prompts([r for r in self.running.values() if r.needs_prefill], result)
        if prefill:
            slots = [r.slot for r in prefill]
            self._take(prefill, result, lambda: self.model.sample(
                self.model.prefill(self.cache, slots, embeds), *self._sampling_rows(prefill)))
        if decode:
            slots, last = [r.slot for r in decode], [r.history[-1] for r in decode]
            self._take(decode, result, lambda: self.model.decode_and_sample(
                self.cache, slots, last, *self._sampling_rows(decode)))
        return result

    def _decode_rows(self, now: float) -> list[LMRequest]:
        """The running requests this step decodes: those due, and the paced ones that may join
        them; all of them while requests wait for a seat (pacing holds seats longer)."""
        ready = [r for r in self.running.values() if not r.needs_prefill]
        if self.waiting and not self._seat_free():
            return ready
        due = [self.pacer.is_due(r, now) for r in ready]
        if not any(due):
            return []
        return [r for r, is_due in zip(ready, due) if is_due or self.pacer.may_join(r, now)]

    def _admit(self, result: StepResult) -> None:
        self._steps_since_admission = 0
        tokens = sum(r.prompt_length(r.segment) for r in self.running.values() if r.needs_prefill)
        while self.waiting and self._seat_free():
            request = self.waiting[0]
            length = request.prompt_length(0)
            if tokens and tokens + length > self.limits.prefill_token_budget:
                break
            self.waiting.popleft()
            request.slot = self.cache.allocate()
            self.running[request.request_id] = request
            result.started.append(request)
            tokens += length

    def _prompts(self, requests: list[LMRequest], result: StepResult) -> tuple[list[LMRequest], list[Tensor]]:
        """The LM input of each request to prefill; one that cannot be built (an id out of the
        vocabulary) fails alone."""
        ready, embeds = [], []
        for request in requests:
            try:
                text = request.segments[request.segment]
                embeds.append(self.model.prompt_embeds(text, request.prompt_text, request.prompt_speech))
            except Exception as exc:
                self._fail(request, f"cannot build the LM prompt: {exc}", result)
            else:
                ready.append(request)
        return ready, embeds

    def _take(self, rows: list[LMRequest], result: StepResult, compute: Callable[[], list[int]]) -> None:
        """Run one batched computation of the rows' next tokens and advance them; if it raises,
        its rows fail (500) and the rest go on."""
        try:
            tokens = compute()
        except Exception as exc:
            for request in rows:
                self._fail(request, f"the LM failed: {exc}", result)
            return
        for request, token in zip(rows, tokens):
            self._advance(request, token, result)

    @staticmethod
    def _sampling_rows(rows: list[LMRequest]) -> tuple[list[list[int]], list[torch.Generator], list[bool]]:
        """``CosyVoice2LM.sample``'s per-row arguments: histories, generators, too short to stop."""
        too_short = [not r.budgets[r.segment].stop_allowed(len(r.history)) for r in rows]
        return [r.history for r in rows], [r.generator for r in rows], too_short

    def _advance(self, request: LMRequest, token: int, result: StepResult) -> None:
        request.needs_prefill = False
        if self.model.is_stop_token(token):
            self._end_segment(request, [], result)
            return
        request.history.append(token)
        request.emitted += 1
        completes_a_chunk = request.chunks is not None and request.chunks.next_chunk(len(request.history), False)
        if completes_a_chunk and request.first_chunk_done_at is None:
            request.first_chunk_done_at = self.clock()
        if len(request.history) >= request.budgets[request.segment].max_tokens:
            self._end_segment(request, [token], result)
        else:
            result.outputs.append(TokenOutput(request.request_id, request.segment, [token], False, False))

    def _end_segment(self, request: LMRequest, tokens: list[int], result: StepResult) -> None:
        if request.first_chunk_done_at is None:  # a first segment shorter than a chunk is one
            request.first_chunk_done_at = self.clock()
        done = request.last_segment
        result.outputs.append(TokenOutput(request.request_id, request.segment, tokens, True, done))
        self.cache.free(request.slot)
        if done:
            del self.running[request.request_id]
            return
        request.segment += 1
        request.history = []
        if request.chunks is not None:
            request.chunks = replace(request.chunks, offset=0, done=False)
        request.slot = self.cache.allocate()  # the slot just freed: the next segment starts afresh
        request.needs_prefill = True

    def _fail(self, request: LMRequest, message: str, result: StepResult) -> None:
        if self.cancel(request.request_id) is not None:
            result.failed.append((request, message))
