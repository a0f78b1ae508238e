"""Prometheus metrics of the service (names in docs/dev/service-contracts.md).

With several HTTP workers each process writes its samples under `PROMETHEUS_MULTIPROC_DIR`
(set by the supervisor to `<runtime dir>/metrics` before any child starts) and `/metrics`
merges them; without it (unit tests, one process) the default registry is used. A stage can
record into the same directory: the LM worker is the one that knows `QUEUE_TIME`.
Gauges copied from the supervisor's status snapshot use "mostrecent": every HTTP worker
writes the same value, the latest wins.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)

TTFA = Histogram(
    "a10tts_time_to_first_audio_seconds",
    "Request arrival to the first audio byte handed to the transport.",
    buckets=LATENCY_BUCKETS,
)
REQUEST_DURATION = Histogram(
    "a10tts_request_duration_seconds", "Request arrival to the last audio byte sent.", buckets=DURATION_BUCKETS
)
QUEUE_TIME = Histogram(
    "a10tts_queue_time_seconds", "Request arrival to admission by the LM scheduler.", buckets=LATENCY_BUCKETS
)
FIRST_AUDIO_PHASE = Histogram(
    "a10tts_first_audio_phase_seconds",
    "Where the time to first audio went, by phase of the pipeline (pipeline/first_audio.py).",
    ["phase"],
    buckets=LATENCY_BUCKETS,
)
REAL_TIME_FACTOR = Histogram(
    "a10tts_real_time_factor", "Request duration divided by the audio duration produced.", buckets=RTF_BUCKETS
)
AUDIO_SECONDS = Counter("a10tts_audio_seconds", "Seconds of audio produced.")
REQUESTS = Counter("a10tts_requests", "Synthesis requests by final HTTP status.", ["status"])
RUNNING = Gauge("a10tts_requests_running", "Requests the LM is decoding.", multiprocess_mode="mostrecent")
WAITING = Gauge("a10tts_requests_waiting", "Requests waiting for an LM slot.", multiprocess_mode="mostrecent")
KV_CACHE_USAGE = Gauge(
    "a10tts_kv_cache_usage_ratio", "Used share of the LM's KV-cache tokens.", multiprocess_mode="mostrecent"
)
PROFILE = Gauge("a10tts_profile_info", "The active tuning profile (1).", ["profile"], multiprocess_mode="mostrecent")


def observe_request(status: int, ttfa_s: float | None, duration_s: float, audio_s: float) -> None:
    REQUESTS.labels(status=str(status)).inc()
    if ttfa_s is not None:
        TTFA.observe(ttfa_s)
    if audio_s > 0:
        REQUEST_DURATION.observe(duration_s)
        REAL_TIME_FACTOR.observe(duration_s / audio_s)
        AUDIO_SECONDS.inc(audio_s)


def observe_first_audio(phases: dict[str, float]) -> None:
    for phase, seconds in phases.items():
        FIRST_AUDIO_PHASE.labels(phase=phase).observe(seconds)


def observe_status(status: dict[str, Any]) -> None:
    """Copy the pipeline's load from a `/v1/status` document; unknown fields are skipped."""
    requests = status.get("requests") or {}
    if requests.get("running") is not None:
        RUNNING.set(requests["running"])
    if requests.get("waiting") is not None:
        WAITING.set(requests["waiting"])
    kv = status.get("kv_cache") or {}
    if kv.get("used_tokens") is not None and kv.get("capacity_tokens"):
        KV_CACHE_USAGE.set(kv["used_tokens"] / kv["capacity_tokens"])
    if status.get("profile"):
        _set_profile(str(status["profile"]))


_current_profile: str | None = None


def _set_profile(profile: str) -> None:
    global _current_profile
    if profile != _current_profile:
        if _current_profile is not None:
            PROFILE.labels(profile=_current_profile).set(0)
        PROFILE.labels(profile=profile).set(1)
        _current_profile = profile


def render() -> tuple[bytes, str]:
    """The exposition text of every process of the service, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
