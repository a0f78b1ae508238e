"""The `/v1/status` document: recent requests (from RequestDone), stage health, load.

The supervisor owns one `RequestWindow` and renders the document about once a second for the
StatusSnapshot it publishes; the same numbers make systemd's one-line `STATUS=`.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..config import Config
from ..pipeline.messages import RequestDone

WINDOW_S = 60.0
RECENT_TTFA = 20  # TTFA values the TUI plots
MAX_EXITS = 16  # child exits kept in the document


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class RequestWindow:
    """Finished requests of the last `window_s` seconds, plus all-time totals."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.total = 0
        self.failed = 0
        self._recent: deque[tuple[float, RequestDone]] = deque()

    def add(self, done: RequestDone, now: float | None = None) -> None:
        self.total += 1
        self.failed += done.status >= 500
        self._recent.append((time.monotonic() if now is None else now, done))

    def _current(self, now: float) -> list[RequestDone]:
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        return [done for _, done in self._recent]

    def summary(self, uptime_s: float, now: float | None = None) -> dict[str, Any]:
        done = self._current(time.monotonic() if now is None else now)
        ttfa = [d.ttfa_s for d in done if d.ttfa_s is not None]
        rtf = [d.duration_s / d.audio_s for d in done if d.audio_s > 0]
        phases: dict[str, list[float]] = {}
        for d in done:
            for phase, seconds in d.ttfa_phases_s.items():
                phases.setdefault(phase, []).append(seconds)
        span = min(self.window_s, max(uptime_s, 1.0))
        return {
            "requests": {"total": self.total, "failed": self.failed,
                         "per_second": round(len(done) / span, 3)},
            "ttfa_s": {"p50": _percentile(ttfa, 0.5), "p95": _percentile(ttfa, 0.95),
                       "window_s": self.window_s, "recent": ttfa[-RECENT_TTFA:]},
            # Median of each phase on its own: they need not add up to the TTFA's median.
            "ttfa_phases_p50_s": {phase: _percentile(values, 0.5) for phase, values in phases.items()},
            "rtf": {"p50": _percentile(rtf, 0.5)},
        }


@dataclass(frozen=True)
class StageExit:
    """A child that exited (crashed, killed or stopped for a reload).

    HTTP workers fail with 503 + Retry-After every unfinished request they sent before `at`
    that may have been inside that stage: its state went with the process.
    """

    seq: int
    stage: str
    index: int
    pid: int | None
    at: float  # unix time the supervisor noticed
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "stage": self.stage, "index": self.index, "pid": self.pid,
                "at": self.at, "reason": self.reason}


def _sum_load(loads: Iterable[Mapping[str, float]], key: str) -> float | None:
    values = [load[key] for load in loads if key in load]
    return sum(values) if values else None


def load_summary(loads: Mapping[str, list[Mapping[str, float]]]) -> dict[str, Any]:
    """Running/waiting from the HTTP workers, KV and GPU memory from the stages' heartbeats."""
    api = loads.get("api", [])
    engine = loads.get("llm", []) + loads.get("decode", []) + loads.get("encode", [])
    return {
        "running": _sum_load(api, "running"),
        "waiting": _sum_load(api, "waiting"),
        "kv_cache": {"used_tokens": _sum_load(loads.get("llm", []), "kv_used_tokens"),
                     "capacity_tokens": _sum_load(loads.get("llm", []), "kv_capacity_tokens")},
        "gpu": {"memory_allocated_bytes": _sum_load(engine, "gpu_memory_allocated_bytes"),
                "memory_reserved_bytes": _sum_load(engine, "gpu_memory_reserved_bytes")},
    }


def build_document(
    *,
    state: str,
    ready: bool,
    config: Config,
    profile: str,
    demo: bool,
    device: str,
    since: float,
    uptime_s: float,
    window: RequestWindow,
    loads: Mapping[str, list[Mapping[str, float]]],
    stages: list[dict[str, Any]],
    exits: Iterable[StageExit],
) -> dict[str, Any]:
    summary = window.summary(uptime_s)
    load = load_summary(loads)
    summary["requests"].update(running=load["running"], waiting=load["waiting"])
    return {
        "version": __version__,
        "state": state,
        "ready": ready,
        "profile": profile,
        "since": since,
        "uptime_s": round(uptime_s, 1),
        "model": {"dir": str(config.model.dir), "demo": demo, "device": device,
                  "precision": config.precision.model_dump()},
        "server": {"host": config.server.host, "port": config.server.port,
                   "http_workers": config.server.http_workers},
        **summary,
        "kv_cache": load["kv_cache"],
        "gpu": load["gpu"],
        "stages": stages,
        "stage_failures": [e.as_dict() for e in exits],
    }


def status_line(document: Mapping[str, Any]) -> str:
    """One ASCII line for systemd's STATUS=, e.g. 'ready, profile balanced, 2.5 req/s, TTFA p50 121 ms'."""
    p50 = document["ttfa_s"]["p50"]
    ttfa = f"TTFA p50 {p50 * 1000:.0f} ms" if p50 is not None else "TTFA p50 -"
    line = (f"{document['state']}, profile {document['profile']}, "
            f"{document['requests']['per_second']:.1f} req/s, {ttfa}")
    return line.encode("ascii", "replace").decode("ascii")
