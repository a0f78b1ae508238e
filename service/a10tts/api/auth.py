"""Who may call the API: optional API keys, and the supervisor's warm-up request.

API keys: `Authorization: Bearer KEY`, keys listed one per line in `server.api_keys_file`. The
file is re-read when it changes, so adding or revoking a key needs no restart. Probes, metrics
and the API schema stay open. A configured file that cannot be read refuses every request
(fail closed) and says so in the log.

The warm-up request (`a10tts.daemon.warmup`) proves itself with the token the supervisor wrote
to `<runtime dir>/warmup.token`: it passes authentication and the readiness gate.
"""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..daemon.warmup import WARMUP_HEADER, read_token
from .errors import ApiError

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/openapi.json", "/docs"})
RECHECK_INTERVAL_S = 1.0


class WarmupToken:
    def __init__(self, token: str | None) -> None:
        self.token = token

    @classmethod
    def load(cls, runtime_dir: Path) -> WarmupToken:
        try:
            return cls(read_token(runtime_dir) or None)
        except OSError:  # not started by the supervisor: no warm-up to let through
            return cls(None)

    def presented_by(self, headers: Headers) -> bool:
        offered = headers.get(WARMUP_HEADER)
        return bool(self.token and offered) and hmac.compare_digest(offered.encode(), self.token.encode())


class ApiKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: tuple[str, ...] = ()
        self._mtime: float | None = None  # of the file the keys came from; None: not read
        self._error: str | None = None  # why the file cannot be read, logged once
        self._checked = float("-inf")
        self._reload()

    def _reload(self) -> None:
        self._checked = time.monotonic()
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            if str(exc) != self._error:
                log.error("cannot read the API keys file %s (%s): every request is refused", self.path, exc)
            self._keys, self._mtime, self._error = (), None, str(exc)
            return
        self._error = None
        self._keys = tuple(key for line in lines if (key := line.strip()) and not key.startswith("#"))
        self._mtime = mtime
        if not self._keys:
            log.warning("%s lists no API keys: every request is refused", self.path)

    def allows(self, key: str) -> bool:
        if time.monotonic() - self._checked > RECHECK_INTERVAL_S:
            self._reload()
        # Compare with every key in constant time: no timing hint about which prefix matched.
        return any([hmac.compare_digest(key.encode(), known.encode()) for known in self._keys])


def _bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiKeyAuth:
    """ASGI middleware: 401 with how to authenticate, for HTTP and WebSocket requests alike."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, warmup: WarmupToken) -> None:
        self.app = app
        self.keys = keys
        self.warmup = warmup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = _bearer_token(headers)
        if (token is not None and self.keys.allows(token)) or self.warmup.presented_by(headers):
            await self.app(scope, receive, send)
            return
        problem = "missing API key" if token is None else "unknown API key"
        error = ApiError(
            401,
            "unauthorized",
            f"{problem}: send the header 'Authorization: Bearer <key>' with a key from the server's "
            "server.api_keys_file",
            {"WWW-Authenticate": "Bearer"},
        )
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).send_denial_response(error.response())
        else:
            await error.response()(scope, receive, send)
