"""Where the server says the time to first audio went: a10tts's per-phase histograms.

``/metrics`` is read before and after a level; the difference of each phase's sum and count
gives its mean over that level's requests. Servers without these metrics (LightTTS, upstream)
give None, and the report leaves the breakdown out.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

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
