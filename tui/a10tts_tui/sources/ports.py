"""Is the configured host:port listening, by which process, with how many open connections."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from .processes import process_name

WILDCARDS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class Listener:
    address: str  # "0.0.0.0:8080"
    pid: int | None  # None when the owner cannot be seen (another user's process, not root)
    name: str | None


@dataclass(frozen=True)
class PortSnapshot:
    host: str
    port: int
    listening: bool | None  # None: this user may not list sockets
    listeners: tuple[Listener, ...] = ()
    connections: int | None = None  # established connections to the port
    message: str = ""

    @property
    def owner_pids(self) -> set[int]:
        return {listener.pid for listener in self.listeners if listener.pid}


class PortWatcher:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def read(self) -> PortSnapshot:
        try:
            sockets = psutil.net_connections(kind="tcp")
        except psutil.AccessDenied:
            return PortSnapshot(self.host, self.port, None,
                                message="not allowed to list sockets here; run as root to see the port")
        ours = [s for s in sockets if s.laddr and s.laddr.port == self.port and self._matches(s.laddr.ip)]
        listeners = tuple(
            Listener(f"{_host(s.laddr.ip)}:{s.laddr.port}", s.pid, process_name(s.pid) if s.pid else None)
            for s in ours if s.status == psutil.CONN_LISTEN
        )
        established = sum(1 for s in ours if s.status == psutil.CONN_ESTABLISHED)
        message = ""
        if listeners and all(listener.pid is None for listener in listeners):
            message = "owner not visible: run as root or as the a10tts user to see it"
        return PortSnapshot(self.host, self.port, bool(listeners), listeners, established, message)

    def _matches(self, ip: str) -> bool:
        # A wildcard on either side occupies the port for every address.
        return self.host in WILDCARDS or ip in WILDCARDS or ip == self.host


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
