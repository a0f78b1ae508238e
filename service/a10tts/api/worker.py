"""Entry point of one HTTP worker process: `a10tts.api.worker.main(spec)`.

uvicorn serves the app on the socket the supervisor bound (`spec.listen_socket`), so every
worker accepts from the same listener and the port stays bound across worker restarts. The
pipeline bridge lives in the app's lifespan, on uvicorn's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI

from ..logs import setup_logging
from ..pipeline.spec import StageSpec
from ..voices import VoiceRegistry
from .app import create_app
from .auth import WarmupToken
from .bridge import PipelineBridge

GRACEFUL_SHUTDOWN_S = 5.0  # the supervisor drains first; this bounds a stuck client
WS_MESSAGE_OVERHEAD = 64 * 1024  # the bistream start message: base64 prompt plus JSON fields


class WorkerServer(uvicorn.Server):
    """Stops on SIGTERM from the supervisor. SIGINT is ignored: a Ctrl-C reaches the whole
    process group, and the supervisor decides how the service stops (drain first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.handle_exit)
        yield


def main(spec: StageSpec) -> None:
    setup_logging(spec.config.logging.level, spec.config.logging.format, spec.name)
    config = spec.config
    bridge = PipelineBridge(spec.endpoints, spec.index, spec.counts.get("encode", config.encode.processes))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await bridge.start()
        try:
            yield
        finally:
            await bridge.close()

    app = create_app(
        config,
        bridge,
        VoiceRegistry(spec.state_dir),
        worker_index=spec.index,
        warmup=WarmupToken.load(spec.runtime_dir),
        lifespan=lifespan,
    )
    server = WorkerServer(
        uvicorn.Config(
            app,
            log_config=None,  # the root logger set up above
            access_log=config.logging.access_log,
            ws="websockets-sansio",
            ws_max_size=config.limits.max_upload_bytes * 4 // 3 + WS_MESSAGE_OVERHEAD,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    )
    asyncio.run(server.serve(sockets=[tcp_listener(spec.listen_socket)]))


def tcp_listener(listener: socket.socket) -> socket.socket:
    """``listener`` with its protocol set to TCP where it was left 0 (``socket.create_server``,
    or a socket rebuilt from a file descriptor). asyncio turns Nagle's algorithm off on accepted
    connections only when their protocol says TCP; with it on, a streamed chunk written after
    the response headers waits for the client's delayed ACK: 40 ms more to the first audio."""
    if listener.family not in (socket.AF_INET, socket.AF_INET6) or listener.proto == socket.IPPROTO_TCP:
        return listener
    return socket.socket(listener.family, listener.type, socket.IPPROTO_TCP, fileno=listener.detach())
