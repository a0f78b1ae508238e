"""The HTTP worker's side of the pipeline: zmq sockets driven from uvicorn's event loop.

Out: `SynthesisRequest` to the encode workers (one PUSH socket connected to all of them: zmq
deals messages round robin to the connected ones), `Cancel` to the LM worker, and `StageReady`,
`Heartbeat`, `RequestDone` to the supervisor. In: `AudioChunk`/`RequestFailed` on `api-{i}`,
routed to the waiting request by id, and the supervisor's `StatusSnapshot` (readiness, load).

Nothing waits forever on a stage: sends never block (a full or absent peer fails the request
with 503 at once), every request has a deadline, and when a snapshot lists a new stage failure
(a child died), the requests in flight fail fast instead of waiting for audio that never comes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio

from ..pipeline import messages
from ..pipeline.endpoints import Endpoints
from ..pipeline.messages import (
    AudioChunk,
    Cancel,
    Heartbeat,
    RequestDone,
    RequestFailed,
    StageReady,
    StatusSnapshot,
    SynthesisRequest,
)
from . import metrics
from .synthesis import PipelineEvent, PipelineUnavailable
from .tasks import cancel_all

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
CLOSE_LINGER_MS = 500  # at shutdown, let the last RequestDone reach the supervisor


class PipelineBridge:
    def __init__(self, endpoints: Endpoints, index: int, encode_workers: int) -> None:
        self.endpoints = endpoints
        self.index = index
        self.encode_workers = encode_workers
        self._routes: dict[str, asyncio.Queue[PipelineEvent]] = {}
        self._audio_started: set[str] = set()  # routed requests that received audio ("running")
        self._snapshot: StatusSnapshot | None = None
        self._last_failure_seq = 0  # newest `stage_failures` entry already acted on
        self._context = zmq.asyncio.Context()
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # --- Pipeline protocol ---------------------------------------------------------------------

    @property
    def snapshot(self) -> StatusSnapshot | None:
        return self._snapshot

    @property
    def in_flight(self) -> int:
        return len(self._routes)

    async def submit(self, request: SynthesisRequest) -> asyncio.Queue[PipelineEvent]:
        events: asyncio.Queue[PipelineEvent] = asyncio.Queue()
        self._routes[request.request_id] = events
        try:
            await self._encode.send(messages.encode(request), zmq.NOBLOCK)
        except zmq.Again:
            del self._routes[request.request_id]
            raise PipelineUnavailable("no encode worker is connected, or all are full") from None
        return events

    def cancel(self, request_id: str) -> None:
        if self._unroute(request_id):
            self._post(self._llm, Cancel(request_id))

    def release(self, request_id: str) -> None:
        self._unroute(request_id)

    def _unroute(self, request_id: str) -> bool:
        self._audio_started.discard(request_id)
        return self._routes.pop(request_id, None) is not None

    def report(self, done: RequestDone) -> None:
        self._post(self._supervisor, done)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._inbox = self._socket(zmq.PULL)
        self._inbox.bind(self.endpoints.api(self.index))
        self._encode = self._socket(zmq.PUSH, immediate=True)
        for j in range(self.encode_workers):
            self._encode.connect(self.endpoints.encode(j))
        self._llm = self._socket(zmq.PUSH, immediate=True)
        self._llm.connect(self.endpoints.llm)
        self._supervisor = self._socket(zmq.PUSH)  # queues until the supervisor is there
        self._supervisor.connect(self.endpoints.supervisor)
        self._status = self._socket(zmq.SUB)
        self._status.setsockopt(zmq.SUBSCRIBE, b"")
        self._status.connect(self.endpoints.status)
        self._tasks = [
            asyncio.create_task(self._receive(self._inbox, self._on_reply), name="api-replies"),
            asyncio.create_task(self._receive(self._status, self._on_status), name="api-status"),
            asyncio.create_task(self._heartbeat(), name="api-heartbeat"),
        ]
        self._post(self._supervisor, StageReady("api", self.index, os.getpid()))

    async def close(self) -> None:
        await cancel_all(*self._tasks)
        self._closed = True
        self._context.destroy(linger=CLOSE_LINGER_MS)

    # --- internals ------------------------------------------------------------------------------

    def _socket(self, kind: int, *, immediate: bool = False) -> zmq.asyncio.Socket:
        socket = self._context.socket(kind)
        if immediate:  # queue only for peers that are connected, so a send to none fails at once
            socket.setsockopt(zmq.IMMEDIATE, 1)
        return socket

    def _post(self, socket: zmq.asyncio.Socket, message: messages.Message) -> None:
        """Send without waiting; a full or absent peer drops the message (logged)."""
        if self._closed:
            return
        sent = socket.send(messages.encode(message), zmq.NOBLOCK)
        sent.add_done_callback(lambda future: _log_if_dropped(message, future))

    async def _receive(self, socket: zmq.asyncio.Socket, handle: Callable[[messages.Message], None]) -> None:
        while True:
            data = await socket.recv()
            try:
                handle(messages.decode(data))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("ignoring a malformed message on %s: %s", socket.LAST_ENDPOINT.decode(), exc)
            except Exception:
                log.exception("error while handling a pipeline message")

    def _on_reply(self, message: messages.Message) -> None:
        if not isinstance(message, (AudioChunk, RequestFailed)):
            log.error("ignoring an unexpected %s on api-%d", type(message).__name__, self.index)
            return
        events = self._routes.get(message.request_id)
        if events is not None:  # else: finished or cancelled already, late audio is dropped
            events.put_nowait(message)
            if isinstance(message, AudioChunk):
                self._audio_started.add(message.request_id)

    def _on_status(self, message: messages.Message) -> None:
        if not isinstance(message, StatusSnapshot):
            return
        self._snapshot = message
        metrics.observe_status(message.status)
        failures = message.status.get("stage_failures") or []
        new = [f for f in failures if f["seq"] > self._last_failure_seq]
        self._last_failure_seq = max([self._last_failure_seq] + [f["seq"] for f in failures])
        died = [f"{f['stage']}-{f['index']} ({f['reason']})" for f in new if f["stage"] != "api"]
        if died:
            self._fail_in_flight(f"a pipeline stage stopped: {', '.join(died)}; retry the request")

    def _fail_in_flight(self, reason: str) -> None:
        if self._routes:
            log.warning("failing %d requests in flight: %s", len(self._routes), reason)
        for request_id, events in self._routes.items():
            events.put_nowait(RequestFailed(request_id, 503, reason))

    async def _heartbeat(self) -> None:
        # From the event loop itself: a blocked loop stops the heartbeats, as it should.
        while True:
            running = len(self._audio_started)
            load = {"running": float(running), "waiting": float(self.in_flight - running)}
            self._post(self._supervisor, Heartbeat("api", self.index, os.getpid(), load))
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)


def _log_if_dropped(message: messages.Message, sent: asyncio.Future) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("dropped a %s: %s", type(message).__name__, sent.exception())
