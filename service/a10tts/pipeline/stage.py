"""What every stage process shares: its sockets, readiness, heartbeats, failures, SIGTERM, device.

A stage's main loop is ``while not stage.stopping: stage.wait(...); ...; stage.heartbeat(load)``.
Heartbeats leave from that loop only, so a hung loop stops them and the supervisor notices.
SIGTERM sets ``stopping`` and wakes the loop: the stage finishes its current step and exits 0.
SIGINT is ignored: the supervisor owns shutdown (a Ctrl-C reaches every process of the group).

A stage may host guests: stages whose loops run on threads of its process (``GuestThread``), each
with its own sockets and heartbeats, stopped with it. The LM hosts the first decode worker that
way: kernels of one process share the GPU, while the driver time-slices separate processes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import torch
import zmq

from a10tts.config import Config
from a10tts.engine.cosyvoice2 import resolve_device

from .. import logs
from .messages import Heartbeat, RequestFailed, StageReady
from .spec import StageSpec
from .transport import Inbox, Outbox

HEARTBEAT_INTERVAL_S = 1.0
GUEST_STOP_TIMEOUT_S = 10.0
log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request that cannot go on; ``status`` is the HTTP status its client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Wakeup:
    """A socket pair the stage's poll watches: signals and worker threads write to end a wait."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)

    @property
    def fd(self) -> int:
        return self._read.fileno()

    @property
    def write_fd(self) -> int:
        return self._write.fileno()

    def wake(self) -> None:
        try:
            self._write.send(b"\0")
        except BlockingIOError:  # already full of wake-ups: the loop will wake anyway
            pass

    def clear(self) -> None:
        try:
            while self._read.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()


def setup_logging(spec: StageSpec) -> None:
    logs.setup_logging(spec.config.logging.level, spec.config.logging.format, spec.name)


def device_of(spec: StageSpec) -> torch.device:
    """The stage's compute device, and its share of the host's cores for torch's CPU work.

    On the CPU the stage processes share the cores: torch's default of one thread per core in
    every process oversubscribes them many times over. On CUDA a stage's host work is small
    (PCM conversion, joins, copies), and one thread does it: torch's pool of one thread per core
    spins after each parallel op, in every stage process, on the cores that the LM's loop and the
    HTTP workers' event loops wait for (the hop from the decode stage to the client took 11 ms at
    one stream and ~60 ms at 16-32 with it, 1-5 ms without, on an H100 host: docs/benchmarks.md).
    """
    device = resolve_device(spec.config.model.device)
    if device.type == "cpu":
        processes = sum(spec.counts.get(stage, 1) for stage in ("encode", "llm", "decode"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    else:
        torch.set_num_threads(1)
        # cuDNN attention plans per input shape, and the eager LM prefill and flow encoder see a
        # new shape on most requests: the plan is then built on the request's critical path
        # (benchmarks/new_shapes.py). The other SDPA kernels need no per-shape set-up.
        torch.backends.cuda.enable_cudnn_sdp(False)
    return device


def dtype_of(config: Config, component: str, device: torch.device) -> torch.dtype:
    """Configured precision on CUDA; the CPU always computes in float32 (half is slow there)."""
    if device.type != "cuda":
        return torch.float32
    return getattr(torch, getattr(config.precision, component))


@contextmanager
def own_stream(device: torch.device, priority: int = 0) -> Iterator[None]:
    """The calling thread's work on a CUDA stream of its own (none off CUDA): the loops of one
    process then overlap on the GPU. Lower ``priority`` numbers run first."""
    if device.type != "cuda":
        yield
        return
    stream = torch.cuda.Stream(device, priority=priority)
    stream.wait_stream(torch.cuda.current_stream(device))  # what loading left queued
    with torch.cuda.stream(stream):
        yield


class Stage:
    def __init__(self, spec: StageSpec, inbox_endpoint: str, decoder: msgspec.msgpack.Decoder,
                 host: Stage | None = None) -> None:
        """``host``: the stage whose process this one runs in, on a thread (None: its own process)."""
        self.spec = spec
        self.host = host
        self.endpoints = spec.endpoints
        self.stopping = False
        self.context = zmq.Context()
        self.inbox = Inbox(self.context, inbox_endpoint, decoder)
        self.outbox = Outbox(self.context)
        self.wakeup = Wakeup()
        self._poller = zmq.Poller()
        self._poller.register(self.inbox.socket, zmq.POLLIN)
        self._poller.register(self.wakeup.fd, zmq.POLLIN)
        self._next_heartbeat = 0.0
        if host is None:  # signals reach the host's (main) thread only; it stops its guests
            signal.signal(signal.SIGTERM, self._on_sigterm)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.set_wakeup_fd(self.wakeup.write_fd, warn_on_full_buffer=False)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """End the loop after its current turn."""
        self.stopping = True
        self.wakeup.wake()

    def wait(self, due_in_s: float | None) -> None:
        """Until a message, a wake-up or a signal arrives, the loop's next work is due in
        ``due_in_s`` (None: none is due), or its next heartbeat is, whichever comes first."""
        timeout_s = max(0.0, self._next_heartbeat - time.monotonic())
        if due_in_s is not None:
            timeout_s = min(timeout_s, due_in_s)
        if timeout_s > 0:
            self._poller.poll(timeout_s * 1000)
        self.wakeup.clear()

    def receive(self) -> list[tuple[Any, dict[str, torch.Tensor]]]:
        return self.inbox.receive_ready()

    def ready(self, **info: Any) -> None:
        self.outbox.send(self.endpoints.supervisor, StageReady(self.spec.stage, self.spec.index, os.getpid(), info))
        log.info("%s ready: %s", self.spec.name, info)

    def heartbeat(self, load: dict[str, float]) -> None:
        """Send a heartbeat if one is due; call this from every turn of the main loop."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            if torch.cuda.is_initialized() and self.host is None:  # the process's memory, reported once
                load = {**load, "gpu_memory_allocated_bytes": float(torch.cuda.memory_allocated()),
                        "gpu_memory_reserved_bytes": float(torch.cuda.memory_reserved())}
            self.outbox.send(self.endpoints.supervisor, Heartbeat(self.spec.stage, self.spec.index, os.getpid(), load))
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_S

    def reply(self, reply_to: int, message: msgspec.Struct) -> bool:
        return self.outbox.send(self.endpoints.api(reply_to), message)

    def fail(self, request_id: str, reply_to: int, status: int, message: str) -> None:
        self.reply(reply_to, RequestFailed(request_id, status, message))

    def fail_stopped(self, requests: dict[str, int]) -> None:
        """On shutdown: tell the waiting HTTP workers at once instead of letting them time out."""
        message = f"the {self.spec.stage} stage stopped (restart or shutdown); retry the request"
        for request_id, reply_to in requests.items():
            self.fail(request_id, reply_to, 503, message)

    def close(self) -> None:
        if self.host is None:
            signal.set_wakeup_fd(-1)
        self.inbox.close()
        self.outbox.close()
        self.wakeup.close()
        self.context.term()


class GuestThread:
    """A guest stage on a thread of its host's process, with a CUDA stream of its own.

    The thread loads the guest's models too (``load`` returns its loop), so that CUDA's per-thread
    state (cuBLAS handles, and the workspace cuBLAS keeps per handle and stream, which captured
    graphs bake in) is never shared with the host's: graphs of two threads replay side by side.
    The host waits for the guests to load (its KV cache is sized from what they leave), then lets
    them serve. An exception out of the loop is a bug, not a bad request (those fail the request
    alone): the process then exits, and the supervisor restarts it, host and guests together.
    """

    def __init__(self, stage: Stage, load: Callable[[], Callable[[], None]], device: torch.device) -> None:
        self.stage = stage
        self._loaded = threading.Event()
        self._serve = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(load, device), name=stage.spec.name, daemon=True)
        self._thread.start()

    def wait_loaded(self) -> None:
        """Until the guest has loaded; raises what its loading raised."""
        self._loaded.wait()
        if self._load_error is not None:
            raise RuntimeError(f"{self.stage.spec.name} did not load: {self._load_error}") from self._load_error

    def serve(self) -> None:
        self._serve.set()

    def _run(self, load: Callable[[], Callable[[], None]], device: torch.device) -> None:
        try:
            with own_stream(device):
                loop = load()
                self._loaded.set()
                self._serve.wait()
                if not self.stage.stopping:
                    loop()
        except BaseException as exc:
            if not self._loaded.is_set():  # the host is waiting for the load: it raises this
                self._load_error = exc
                self._loaded.set()
                return
            log.exception("%s failed; its process exits so that the supervisor restarts it", self.stage.spec.name)
            os._exit(1)

    def stop(self) -> None:
        """Stop the loop (or the wait to serve), wait for it, close its sockets."""
        self.stage.stop()
        self._serve.set()
        self._thread.join(GUEST_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("%s did not stop within %.0f s", self.stage.spec.name, GUEST_STOP_TIMEOUT_S)
        else:
            self.stage.close()
