"""The admin socket: JSON lines over `<runtime dir>/admin.sock` (mode 0660, group a10tts-admin).

Admin actions never travel over TCP. The server side dispatches to an `AdminActions` (the
supervisor); the client side is what `a10tts ctl` and `a10tts profile use` speak.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from ..admin_client import ADMIN_GROUP

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024

Progress = Callable[[dict[str, Any]], Awaitable[None]]


class AdminActions(Protocol):
    def status(self) -> dict[str, Any]: ...

    async def reload(self, progress: Progress, profile: str | None = None) -> dict[str, Any]: ...

    async def drain(self) -> dict[str, Any]: ...


# -- server ---------------------------------------------------------------------------------


def in_use(path: Path) -> bool:
    """Whether a live service answers on `path` (a leftover file from a crash does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def bind_admin_socket(path: Path) -> socket.socket:
    """Bind with mode 0660 from the start (umask), then hand the socket to the admin group."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    try:
        os.chown(path, -1, grp.getgrnam(ADMIN_GROUP).gr_gid)
    except KeyError:
        log.info("group %s does not exist: only the service's user and root can use %s", ADMIN_GROUP, path)
    except PermissionError:
        log.warning("cannot give %s to group %s: add the service user to that group", path, ADMIN_GROUP)
    sock.listen(16)
    return sock


class AdminServer:
    def __init__(self, path: Path, actions: AdminActions):
        self.path = path
        self.actions = actions
        self._server: asyncio.base_events.Server | None = None
        self._detached: set[asyncio.Task] = set()  # reloads nobody waits for; held until done

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, sock=bind_admin_socket(self.path),
                                                       limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(message: dict[str, Any]) -> None:
            # A client that went away (a killed `ctl reload`) must not abort what it asked for.
            with contextlib.suppress(ConnectionError):
                writer.write(json.dumps(message).encode() + b"\n")
                await writer.drain()

        try:
            while line := await reader.readline():
                await send(await self._answer(line, send))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent an endless line; nothing to answer
        finally:
            writer.close()

    async def _answer(self, line: bytes, progress: Progress) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            return {"ok": False, "done": True, "error": f"not a JSON line: {exc}"}
        cmd = request.get("cmd") if isinstance(request, dict) else None
        if cmd == "status":
            return {"ok": True, "done": True, "status": self.actions.status()}
        if cmd in ("reload", "profile"):
            name = request.get("name") if cmd == "profile" else None
            if cmd == "profile" and not isinstance(name, str):
                return {"ok": False, "done": True, "error": 'profile needs "name": "<profile>"'}
            if not request.get("wait", True):
                task = asyncio.get_running_loop().create_task(self.actions.reload(_ignore, name))
                self._detached.add(task)
                task.add_done_callback(self._detached.discard)
                return {"ok": True, "done": True, "event": "accepted"}
            return {**await self.actions.reload(progress, name), "done": True}
        if cmd == "drain":
            return {**await self.actions.drain(), "done": True}
        return {"ok": False, "done": True,
                "error": f"unknown command {cmd!r}; expected status, reload, drain or profile"}


async def _ignore(_: dict[str, Any]) -> None:
    return None
