"""The request window behind /v1/status and systemd's STATUS= line."""

from __future__ import annotations

from a10tts.config import Config
from a10tts.daemon.status import RequestWindow, StageExit, build_document, status_line
from a10tts.pipeline.messages import RequestDone


def done(status: int = 200, ttfa: float | None = 0.1, duration: float = 1.0, audio: float = 2.0) -> RequestDone:
    return RequestDone("r", status, ttfa, duration, audio)


def test_percentiles_rate_and_failures() -> None:
    window = RequestWindow(window_s=60)
    for i, ttfa in enumerate([0.1, 0.2, 0.3, 0.4]):
        window.add(done(ttfa=ttfa), now=100.0 + i)
    window.add(done(status=503, ttfa=None, audio=0), now=104.0)
    summary = window.summary(uptime_s=1000, now=105.0)
    assert summary["requests"] == {"total": 5, "failed": 1, "per_second": round(5 / 60, 3)}
    assert summary["ttfa_s"]["p50"] == 0.25 and summary["ttfa_s"]["recent"] == [0.1, 0.2, 0.3, 0.4]
    assert summary["rtf"]["p50"] == 0.5


def test_the_phases_of_the_ttfa_have_their_own_medians() -> None:
    window = RequestWindow(window_s=60)
    for i, vocode in enumerate([0.1, 0.2, 0.3]):
        window.add(RequestDone("r", 200, 0.4, 1.0, 2.0, ttfa_phases_s={"encode": 0.01, "vocode": vocode}), now=float(i))
    window.add(done(status=503, ttfa=None, audio=0), now=3.0)  # no audio, no phases
    assert window.summary(uptime_s=10, now=4.0)["ttfa_phases_p50_s"] == {"encode": 0.01, "vocode": 0.2}
    assert RequestWindow().summary(uptime_s=1, now=1.0)["ttfa_phases_p50_s"] == {}


def test_old_requests_leave_the_window_but_stay_in_totals() -> None:
    window = RequestWindow(window_s=10)
    window.add(done(ttfa=5.0), now=0.0)
    window.add(done(ttfa=0.1), now=20.0)
    summary = window.summary(uptime_s=25, now=25.0)
    assert summary["ttfa_s"]["p50"] == 0.1 and summary["requests"]["total"] == 2


def test_an_empty_window_reports_nulls() -> None:
    summary = RequestWindow().summary(uptime_s=5, now=5.0)
    assert summary["ttfa_s"]["p50"] is None and summary["rtf"]["p50"] is None


def test_document_and_status_line() -> None:
    window = RequestWindow()
    window.add(done(ttfa=0.121))
    document = build_document(
        state="ready", ready=True, config=Config(), profile="prøfile", demo=True, device="cpu", since=1.0,
        uptime_s=10, window=window,
        loads={"api": [{"running": 2, "waiting": 1}, {"running": 1, "waiting": 0}],
               "llm": [{"kv_used_tokens": 512, "kv_capacity_tokens": 4096}]},
        stages=[], exits=[StageExit(1, "llm", 0, 42, 2.0, "killed by SIGKILL")],
    )
    assert document["requests"]["running"] == 3 and document["requests"]["waiting"] == 1
    assert document["kv_cache"] == {"used_tokens": 512, "capacity_tokens": 4096}
    assert document["gpu"]["memory_allocated_bytes"] is None
    assert document["stage_failures"][0]["reason"] == "killed by SIGKILL"
    line = status_line(document)
    assert line == "ready, profile pr?file, 0.1 req/s, TTFA p50 121 ms" and line.isascii()
