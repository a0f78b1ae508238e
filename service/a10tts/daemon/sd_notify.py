"""systemd's notify protocol (sd_notify(3)) in a few lines of the standard library.

Why not the `sdnotify` package: it encodes latin-1 and swallows every socket error, so a
broken notify socket would go unnoticed until systemd kills the unit for a missing READY=1.
Here a failed send is logged (once per message kind), and nothing else depends on a package.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

# Variables systemd sets for the main process only; children must not inherit them.
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends `KEY=VALUE` lines to $NOTIFY_SOCKET; does nothing when not run by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._failed_kinds: set[str] = set()
        self._socket: socket.socket | None = None
        if address:
            # A leading '@' names a socket in the abstract namespace.
            self._target = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> Notifier:
        """Take the notify variables out of `env` (os.environ) so no child process inherits them."""
        env = os.environ if env is None else env
        address, usec, pid = (env.pop(name, None) for name in NOTIFY_ENV)
        watchdog = int(usec) if usec and (not pid or int(pid) == os.getpid()) else None
        return cls(address or None, watchdog)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of WatchdogSec, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: object) -> bool:
        """send(READY=1, STATUS="...") -> one datagram 'READY=1\\nSTATUS=...'."""
        if self._socket is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self._socket.sendto(message.encode("utf-8"), self._target)
        except OSError as exc:
            kind = ",".join(fields)
            if kind not in self._failed_kinds:
                self._failed_kinds.add(kind)
                log.error("cannot notify systemd (%s) on %s: %s", kind, self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self) -> None:
        self.send(STOPPING=1)

    def status(self, line: str) -> None:
        self.send(STATUS=line)

    def extend_timeout(self, seconds: float) -> None:
        self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
