"""The supervisor's share of the runtime directory, and the HTTP listener it keeps bound."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path

from ..config import LoadedConfig

log = logging.getLogger(__name__)


def reset_private_dir(path: Path) -> None:
    """An empty directory only the service user can enter (stale sockets or metrics are dropped)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)


def ipc_dir(loaded: LoadedConfig) -> Path:
    configured = loaded.config.paths.ipc_dir
    return Path(configured) if configured else loaded.dirs.runtime / "ipc"


def bind_http(loaded: LoadedConfig) -> socket.socket:
    """Bound by the supervisor and handed to every HTTP worker: it outlives their restarts, and
    while no worker accepts, connections wait in the backlog instead of being refused."""
    host, port = loaded.config.server.host, loaded.config.server.port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port} (server.host, server.port): "
                                 f"{exc.strerror}") from None
    log.info("listening on %s:%d", host, port)
    return listener
