"""The HTTP worker's zmq bridge against real sockets standing in for the stages and supervisor."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from a10tts.api.bridge import PipelineBridge
from a10tts.api.synthesis import PipelineUnavailable
from a10tts.pipeline.endpoints import Endpoints
from a10tts.pipeline.messages import (
    AudioChunk,
    Cancel,
    Heartbeat,
    RequestDone,
    RequestFailed,
    StageReady,
    StatusSnapshot,
    SynthesisRequest,
    decode,
    encode,
)


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    directory = Path(tempfile.mkdtemp(prefix="a10tts-ipc-"))  # short: ipc paths are limited to ~100 bytes
    endpoints = Endpoints(directory)
    endpoints.prepare()
    yield endpoints
    shutil.rmtree(directory)


class Peers:
    """The other side of every socket the bridge uses."""

    def __init__(self, endpoints: Endpoints, encode_workers: int) -> None:
        self.context = zmq.asyncio.Context()
        self.encode = [self._bind(zmq.PULL, endpoints.encode(j)) for j in range(encode_workers)]
        self.llm = self._bind(zmq.PULL, endpoints.llm)
        self.supervisor = self._bind(zmq.PULL, endpoints.supervisor)
        self.status = self._bind(zmq.PUB, endpoints.status)
        self.api = self.context.socket(zmq.PUSH)
        self.api.connect(endpoints.api(0))

    def _bind(self, kind: int, endpoint: str) -> zmq.asyncio.Socket:
        socket = self.context.socket(kind)
        socket.bind(endpoint)
        return socket

    async def receive(self, socket: zmq.asyncio.Socket, kind: type, timeout: float = 5.0):
        while True:
            message = decode(await asyncio.wait_for(socket.recv(), timeout))
            if isinstance(message, kind):
                return message

    def close(self) -> None:
        self.context.destroy(linger=0)


def request(request_id: str) -> SynthesisRequest:
    return SynthesisRequest(request_id=request_id, reply_to=0, mode="zero_shot", text="hi")


async def started(endpoints: Endpoints, encode_workers: int = 2) -> tuple[PipelineBridge, Peers]:
    peers = Peers(endpoints, encode_workers)
    bridge = PipelineBridge(endpoints, index=0, encode_workers=encode_workers)
    await bridge.start()
    await asyncio.sleep(0.2)  # ipc connections complete in the background
    return bridge, peers


def test_requests_are_dealt_to_encode_workers_and_replies_routed_by_id(endpoints):
    async def scenario() -> None:
        bridge, peers = await started(endpoints)
        try:
            ready = await peers.receive(peers.supervisor, StageReady)
            assert (ready.stage, ready.index) == ("api", 0)
            queues = {rid: await bridge.submit(request(rid)) for rid in ("a", "b")}
            received = [await peers.receive(worker, SynthesisRequest) for worker in peers.encode]
            assert sorted(r.request_id for r in received) == ["a", "b"]  # one each: round robin
            assert bridge.in_flight == 2
            await peers.api.send(encode(AudioChunk("b", 0, b"\1\0", True)))
            await peers.api.send(encode(AudioChunk("nobody", 0, b"\1\0", True)))  # dropped
            await peers.api.send(encode(RequestFailed("a", 400, "bad prompt")))
            assert await asyncio.wait_for(queues["b"].get(), 5) == AudioChunk("b", 0, b"\1\0", True)
            assert await asyncio.wait_for(queues["a"].get(), 5) == RequestFailed("a", 400, "bad prompt")
            while (beat := await peers.receive(peers.supervisor, Heartbeat, timeout=3)).load["running"] == 0:
                pass  # the beat sent before the audio arrived
            assert beat.stage == "api" and beat.load == {"running": 1.0, "waiting": 1.0}
            bridge.release("b")
            bridge.cancel("a")
            assert await peers.receive(peers.llm, Cancel) == Cancel("a")
            assert bridge.in_flight == 0
            bridge.report(RequestDone("a", 400, None, 0.1, 0.0))
            assert await peers.receive(peers.supervisor, RequestDone) == RequestDone("a", 400, None, 0.1, 0.0)
        finally:
            await bridge.close()
            peers.close()

    asyncio.run(scenario())


def test_no_encode_worker_fails_the_submit_at_once(endpoints):
    async def scenario() -> None:
        bridge = PipelineBridge(endpoints, index=0, encode_workers=1)  # nobody listens at encode-0
        await bridge.start()
        try:
            with pytest.raises(PipelineUnavailable, match="no encode worker"):
                await asyncio.wait_for(bridge.submit(request("x")), 1)
            assert bridge.in_flight == 0
        finally:
            await bridge.close()

    asyncio.run(scenario())


def test_status_snapshots_set_readiness_and_a_dead_stage_fails_requests_in_flight(endpoints):
    def snapshot(failures: list[dict]) -> bytes:
        status = {"requests": {"running": 0, "waiting": 0}, "stage_failures": failures}
        return encode(StatusSnapshot(ready=True, state="ready", status=status))

    old = {"seq": 1, "stage": "decode", "index": 0, "pid": 10, "at": 0.0, "reason": "killed by SIGKILL"}
    api_failure = old | {"seq": 2, "stage": "api"}
    new = old | {"seq": 3, "pid": 11}

    async def wait_for_snapshot(bridge: PipelineBridge, peers: Peers, data: bytes) -> None:
        for _ in range(100):
            await peers.status.send(data)
            await asyncio.sleep(0.02)
            if bridge.snapshot is not None and bridge.snapshot == decode(data):
                return
        raise AssertionError("the snapshot never arrived")

    async def scenario() -> None:
        bridge, peers = await started(endpoints, encode_workers=1)
        try:
            assert bridge.snapshot is None
            await wait_for_snapshot(bridge, peers, snapshot([old]))
            assert bridge.snapshot.ready
            events = await bridge.submit(request("r"))
            await wait_for_snapshot(bridge, peers, snapshot([old, api_failure]))  # nothing new for us
            assert events.empty()
            await wait_for_snapshot(bridge, peers, snapshot([old, api_failure, new]))
            failure = events.get_nowait()
            assert isinstance(failure, RequestFailed) and failure.status == 503
            assert "decode-0 (killed by SIGKILL)" in failure.message
        finally:
            await bridge.close()
            peers.close()

    asyncio.run(scenario())
