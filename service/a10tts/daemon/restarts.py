"""When a crashed child is restarted, and when the supervisor gives up on it.

Backoff grows per slot (stage, index) with the crashes of the last window; one crash more than
the backoff steps and the supervisor exits non-zero, so systemd restarts the whole unit (and
its StartLimitBurst= ends a crash loop that no restart can fix).
"""

from __future__ import annotations

import time
from collections import deque

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
WINDOW_S = 300.0


class RestartPolicy:
    def __init__(self, backoff_s: tuple[float, ...] = BACKOFF_S, window_s: float = WINDOW_S):
        self.backoff_s = backoff_s
        self.window_s = window_s
        self._crashes: dict[tuple[str, int], deque[float]] = {}

    def crashed(self, slot: tuple[str, int], now: float | None = None) -> float | None:
        """Record a crash; the delay before restarting, or None to give up."""
        now = time.monotonic() if now is None else now
        crashes = self._crashes.setdefault(slot, deque())
        crashes.append(now)
        while crashes[0] < now - self.window_s:
            crashes.popleft()
        return self.backoff_s[len(crashes) - 1] if len(crashes) <= len(self.backoff_s) else None

    def recent(self, slot: tuple[str, int]) -> int:
        return len(self._crashes.get(slot, ()))
