"""The encode, LM and decode stages as real processes, with the test in the HTTP worker's and the
supervisor's place: it binds ``api-0`` and ``supervisor``, PUSHes requests to ``encode-0`` and
cancels to ``llm``, and reads audio, failures, readiness and heartbeats from its sockets."""

from __future__ import annotations

import io
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import zmq

from a10tts.config import Config
from a10tts.pipeline import decode_worker, encode_worker, llm_worker
from a10tts.pipeline.messages import AudioChunk, Cancel, Heartbeat, RequestFailed, StageReady, SynthesisRequest
from a10tts.pipeline.messages import decode as decode_message
from a10tts.pipeline.messages import encode as encode_message
from a10tts.pipeline.spec import StageSpec

ENTRY_POINTS: dict[str, Callable[[StageSpec], None]] = {
    "encode": encode_worker.main,
    "llm": llm_worker.main,
    "decode": decode_worker.main,
}


def wav_bytes(seconds: float, sample_rate: int = 16000, seed: int = 0) -> bytes:
    """A voice-like test prompt: a vibrato tone with a little noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (140 + 20 * seed) * t + 3 * np.sin(2 * np.pi * 5 * t))
    wave += 0.02 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, wave.astype(np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class Outcome:
    """What the HTTP worker received for one request."""

    chunks: list[AudioChunk] = field(default_factory=list)
    failure: RequestFailed | None = None

    @property
    def complete(self) -> bool:
        return self.failure is not None or bool(self.chunks and self.chunks[-1].final)

    @property
    def pcm(self) -> np.ndarray:
        return np.frombuffer(b"".join(c.pcm for c in self.chunks), dtype="<i2")


class Pipeline:
    def __init__(self, root: Path, model_dir: Path, config: Config) -> None:
        self.specs = {
            stage: StageSpec(
                stage=stage, index=0, config=config, model_dir=model_dir, state_dir=root / "state",
                runtime_dir=root / "run", ipc_dir=root / "ipc",
                counts={"api": 1, "encode": 1, "llm": 1, "decode": 1},
            )
            for stage in ENTRY_POINTS
        }
        endpoints = self.specs["llm"].endpoints
        endpoints.prepare()
        self.context = zmq.Context()
        self.api = self._socket(zmq.PULL, bind=endpoints.api(0))
        self.supervisor = self._socket(zmq.PULL, bind=endpoints.supervisor)
        self.to_encode = self._socket(zmq.PUSH, connect=endpoints.encode(0))
        self.to_llm = self._socket(zmq.PUSH, connect=endpoints.llm)
        self.processes: dict[str, multiprocessing.Process] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.ready: list[StageReady] = []
        self.heartbeats: dict[str, Heartbeat] = {}

    def _socket(self, kind: int, *, bind: str | None = None, connect: str | None = None) -> zmq.Socket:
        socket = self.context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(bind) if bind else socket.connect(connect)
        return socket

    # --- processes --------------------------------------------------------------------------

    def start(self, stage: str) -> multiprocessing.Process:
        process = multiprocessing.get_context("spawn").Process(
            target=ENTRY_POINTS[stage], args=(self.specs[stage],), name=stage, daemon=True
        )
        process.start()
        self.processes[stage] = process
        return process

    def start_all(self, timeout: float = 60.0) -> None:
        for stage in ENTRY_POINTS:
            self.start(stage)
        self.wait_until(lambda: {r.stage for r in self.ready} >= set(ENTRY_POINTS), timeout, "all stages ready")

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every stage; their exit codes."""
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
        codes = {}
        for stage, process in self.processes.items():
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()
            codes[stage] = process.exitcode
        return codes

    def close(self) -> None:
        self.stop()
        self.context.destroy(linger=0)

    # --- messages ---------------------------------------------------------------------------

    def submit(self, request_id: str, **fields: Any) -> str:
        fields.setdefault("mode", "zero_shot")
        fields.setdefault("text", "Hello there.")
        self.outcomes[request_id] = Outcome()
        self.to_encode.send(encode_message(SynthesisRequest(request_id=request_id, reply_to=0, **fields)))
        return request_id

    def cancel(self, request_id: str) -> None:
        self.to_llm.send(encode_message(Cancel(request_id)))

    def pump(self, timeout: float) -> None:
        """Receive for up to ``timeout`` seconds (returns after the first batch of messages)."""
        poller = zmq.Poller()
        poller.register(self.api, zmq.POLLIN)
        poller.register(self.supervisor, zmq.POLLIN)
        for socket, _ in poller.poll(timeout * 1000):
            while True:
                try:
                    message = decode_message(socket.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                self._record(message)

    def _record(self, message: Any) -> None:
        if isinstance(message, AudioChunk):
            self.outcomes.setdefault(message.request_id, Outcome()).chunks.append(message)
        elif isinstance(message, RequestFailed):
            self.outcomes.setdefault(message.request_id, Outcome()).failure = message
        elif isinstance(message, Heartbeat):
            self.heartbeats[message.stage] = message
        elif isinstance(message, StageReady):
            self.ready.append(message)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            self.pump(min(left, 0.2))

    def finish(self, *request_ids: str, timeout: float = 30.0) -> dict[str, Outcome]:
        self.wait_until(lambda: all(self.outcomes[r].complete for r in request_ids), timeout,
                        f"requests {', '.join(request_ids)}")
        return {r: self.outcomes[r] for r in request_ids}

    def fresh_heartbeat(self, stage: str, timeout: float = 5.0) -> Heartbeat:
        """The first heartbeat of ``stage`` sent after now."""
        self.heartbeats.pop(stage, None)
        self.wait_until(lambda: stage in self.heartbeats, timeout, f"a heartbeat of {stage}")
        return self.heartbeats[stage]
