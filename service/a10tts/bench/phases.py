"""Where the server says the time to first audio went, phase by phase.

a10tts answers each synthesis request with a ``Server-Timing`` header of its phases, so the
phases of exactly the measured requests are known. Servers from before that header export only
the per-phase histograms: ``/metrics`` is read before and after a level, and the difference of
each phase's sum and count gives its mean over all the level's requests (the unmeasured ramp-up
requests of ``--ramp-up`` included). Servers with neither (LightTTS, upstream) give None, and the report leaves
the breakdown out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from .load import Sample

PHASE_METRIC = "a10tts_first_audio_phase_seconds"

Totals = dict[str, tuple[float, float]]  # phase: (sum of seconds, count)


def read_totals(url: str, headers: dict[str, str] | None = None) -> Totals | None:
    """The phases' running totals, or None if the server does not export them."""
    try:
        response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
        response.raise_for_status()
        families = list(text_string_to_metric_families(response.text))
    except (httpx.HTTPError, ValueError):
        return None
    totals: dict[str, list[float]] = {}
    for family in families:
        if family.name != PHASE_METRIC:
            continue
        for sample in family.samples:
            field = {f"{PHASE_METRIC}_sum": 0, f"{PHASE_METRIC}_count": 1}.get(sample.name)
            if field is not None:
                totals.setdefault(sample.labels["phase"], [0.0, 0.0])[field] = sample.value
    return {phase: (total, count) for phase, (total, count) in totals.items()} or None


def mean_ms(before: Totals | None, after: Totals | None) -> dict[str, float] | None:
    """Mean milliseconds per phase over the requests between two readings."""
    if before is None or after is None:
        return None
    means = {}
    for phase, (total, count) in after.items():
        old_total, old_count = before.get(phase, (0.0, 0.0))
        if count > old_count:
            means[phase] = 1000 * (total - old_total) / (count - old_count)
    return means or None


def server_timing_ms(header: str | None) -> dict[str, float] | None:
    """Milliseconds per metric of a ``Server-Timing`` header (``name;dur=4.1, ...``); metrics
    without a readable ``dur`` are skipped. None when there is no such metric."""
    timings = {}
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip().lower() == "dur":
                try:
                    timings[name] = float(value.strip().strip('"'))
                except ValueError:
                    pass
    return timings or None


def mean_of_samples(samples: list[Sample]) -> dict[str, float] | None:
    """Mean milliseconds per phase over the samples that carry phases."""
    measured = [sample.phases_ms for sample in samples if sample.phases_ms]
    if not measured:
        return None
    names = dict.fromkeys(name for phases in measured for name in phases)
    return {name: sum(phases.get(name, 0.0) for phases in measured) / len(measured) for name in names}
