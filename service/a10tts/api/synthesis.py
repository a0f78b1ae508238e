"""One synthesis request from its HTTP arrival to its last audio byte.

`Synthesizer.start` admits a request (ready? room left?) and hands it to the pipeline; the
returned `Job` yields its PCM in order, turns a stage's `RequestFailed` or the deadline into an
`ApiError`, and `finish` accounts for the outcome exactly once: Prometheus metrics, a
`RequestDone` for the supervisor, and a `Cancel` to the pipeline unless the request completed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Scope

from ..config.schema import LimitsConfig
from ..pipeline.first_audio import phases, stamp
from ..pipeline.messages import AudioChunk, RequestDone, RequestFailed, StatusSnapshot, SynthesisRequest
from . import metrics
from .audio import pcm_seconds
from .errors import RETRY_AFTER_NOT_READY_S, ApiError, unavailable

OK = 200
CLIENT_CLOSED = 499  # nginx's code for "the client went away": only in metrics and RequestDone

PipelineEvent = AudioChunk | RequestFailed

log = logging.getLogger(__name__)


class PipelineUnavailable(Exception):
    """The request could not be handed to an encode worker (none connected, or all full)."""


class Pipeline(Protocol):
    """What the HTTP side needs from the stages; `bridge.PipelineBridge` over zmq in production."""

    @property
    def snapshot(self) -> StatusSnapshot | None: ...  # the supervisor's latest, None before the first

    @property
    def in_flight(self) -> int: ...  # requests of this worker still routed

    async def submit(self, request: SynthesisRequest) -> asyncio.Queue[PipelineEvent]: ...

    def cancel(self, request_id: str) -> None: ...  # stop routing it and free it in the stages

    def release(self, request_id: str) -> None: ...  # stop routing it (it completed)

    def report(self, done: RequestDone) -> None: ...


@dataclass(frozen=True)
class Arrival:
    wall: float  # time.time(): travels with the request
    mono: float  # time.monotonic(): for durations

    @classmethod
    def now(cls) -> Arrival:
        return cls(time.time(), time.monotonic())


ARRIVAL_SCOPE_KEY = "a10tts.arrival"  # set by middleware.ArrivalStamp


def arrival_of(scope: Scope) -> Arrival:
    return scope.get(ARRIVAL_SCOPE_KEY) or Arrival.now()


def new_request_id() -> str:
    return uuid.uuid4().hex


class Job:
    def __init__(self, synthesizer: Synthesizer, request: SynthesisRequest, arrival: Arrival, events: asyncio.Queue):
        self.request = request
        self.id = request.request_id
        self.arrival = arrival
        self._synthesizer = synthesizer
        self._events: asyncio.Queue[PipelineEvent] = events
        self._timeout = synthesizer.limits.request_timeout_seconds
        self._first_audio_s: float | None = None
        self._marks: dict[str, float] = {}  # of the first chunk, from the stages
        self._phases: dict[str, float] | None = None
        self._audio_bytes = 0
        self._finished = False

    async def audio(self) -> AsyncIterator[bytes]:
        """The request's non-empty PCM pieces in order; raises `ApiError` if it fails or times out."""
        deadline = self.arrival.mono + self._timeout
        while True:
            try:
                event = await asyncio.wait_for(self._events.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ApiError(
                    504,
                    "timeout",
                    f"the request did not finish within {self._timeout:g} s (limits.request_timeout_seconds)",
                ) from None
            if isinstance(event, RequestFailed):
                raise ApiError.from_status(event.status, event.message)
            if event.seq == 0:
                self._marks = dict(event.marks)
            if event.pcm:
                yield event.pcm
            if event.final:
                return

    def first_audio_phases(self) -> dict[str, float]:
        """Where the time to first audio went, in seconds per phase (``first_audio.py``), once the
        first audio is about to be sent; the first call records them in the metrics."""
        if self._phases is None:
            self._phases = phases(stamp(self._marks, "sent"))
            metrics.observe_first_audio(self._phases)
        return self._phases

    def sent(self, n_bytes: int) -> None:
        """`n_bytes` of audio were handed to the transport."""
        if self._first_audio_s is None and n_bytes:
            self._first_audio_s = time.monotonic() - self.arrival.mono
            phases_s = self.first_audio_phases()  # recorded in the metrics here if the headers did not
            log.debug("request %s: first audio after %.0f ms: %s", self.id, 1000 * self._first_audio_s,
                      ", ".join(f"{name} {1000 * s:.0f}" for name, s in phases_s.items()))
        self._audio_bytes += n_bytes

    def finish(self, status: int) -> None:
        """Account for the outcome once; any outcome but success also frees the request in the stages."""
        if self._finished:
            return
        self._finished = True
        pipeline = self._synthesizer.pipeline
        if status == OK:
            pipeline.release(self.id)
        else:
            pipeline.cancel(self.id)
        self._synthesizer.record(self.id, status, self.arrival, self._first_audio_s, self._audio_bytes,
                                 self._phases)


class Synthesizer:
    def __init__(self, pipeline: Pipeline, *, worker_index: int, limits: LimitsConfig, max_running_requests: int):
        self.pipeline = pipeline
        self.worker_index = worker_index
        self.limits = limits
        # Requests the pipeline holds at most before new ones are turned away.
        self.capacity = max_running_requests + limits.max_waiting_requests

    def readiness_error(self) -> ApiError | None:
        snapshot = self.pipeline.snapshot
        if snapshot is None:
            return unavailable(
                "the service is starting (no status from the supervisor yet); retry shortly",
                retry_after_s=RETRY_AFTER_NOT_READY_S,
                code="not_ready",
            )
        if not snapshot.ready:
            return unavailable(
                f"the service is {snapshot.state}; retry shortly",
                retry_after_s=RETRY_AFTER_NOT_READY_S,
                code="not_ready",
            )
        return None

    def _admission_error(self, *, warmup: bool) -> ApiError | None:
        if not warmup and (error := self.readiness_error()):
            return error
        snapshot = self.pipeline.snapshot
        load = (snapshot.status.get("requests") if snapshot else None) or {}
        queued = (load.get("running") or 0) + (load.get("waiting") or 0)
        if self.pipeline.in_flight >= self.capacity or queued >= self.capacity:
            return unavailable(
                f"the server is at capacity ({self.capacity} requests: llm.max_running_requests + "
                "limits.max_waiting_requests); retry shortly",
                code="overloaded",
            )
        return None

    async def start(self, arrival: Arrival, *, warmup: bool = False, **fields: Any) -> Job:
        """Admit and submit a request; `fields` are `SynthesisRequest` fields (mode, text, ...).

        `warmup`: the supervisor's warm-up request, let through before the service is ready.
        """
        if error := self._admission_error(warmup=warmup):
            raise error
        request = SynthesisRequest(
            request_id=new_request_id(), reply_to=self.worker_index, arrival=arrival.wall, **fields
        )
        try:
            events = await self.pipeline.submit(request)
        except PipelineUnavailable as exc:
            raise unavailable(f"the synthesis pipeline is not accepting requests ({exc}); retry shortly") from None
        return Job(self, request, arrival, events)

    def record(
        self, request_id: str, status: int, arrival: Arrival, ttfa_s: float | None, audio_bytes: int,
        ttfa_phases_s: dict[str, float] | None = None,
    ) -> None:
        """Metrics and the supervisor's `RequestDone` for one request, served or refused."""
        duration_s = time.monotonic() - arrival.mono
        audio_s = pcm_seconds(audio_bytes)
        metrics.observe_request(status, ttfa_s, duration_s, audio_s)
        self.pipeline.report(RequestDone(request_id, status, ttfa_s, duration_s, audio_s,
                                         ttfa_phases_s=ttfa_phases_s or {}))
