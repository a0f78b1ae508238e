"""Statistics of a benchmark run, and its Markdown, JSON and PNG forms."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .load import Sample
from .phases import mean_of_samples


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LevelStats:
    label: str
    concurrency: int
    requests: int
    errors: int
    ttfa_p50: float | None
    ttfa_p90: float | None
    ttfa_p95: float | None
    ttfa_p99: float | None
    latency_p50: float | None
    latency_p95: float | None
    rtf_p50: float | None
    rtf_max: float | None
    stalled_streams: int  # streams whose playback would have paused (lag > 50 ms)
    audio_s_per_wall_s: float
    first_audio_phases_ms: dict[str, float] | None = None  # server-side means (bench/phases.py)
    first_audio_phases_slowest_ms: dict[str, float] | None = None  # the same over the requests at or above TTFA p90

    @classmethod
    def of(cls, label: str, concurrency: int, samples: list[Sample], wall_s: float,
           phases_ms: dict[str, float] | None = None) -> "LevelStats":
        """``phases_ms``: the server's /metrics means, used where no sample carries its own phases."""
        ok = [s for s in samples if s.ok]
        ttfa = [s.ttfa_s for s in ok if s.ttfa_s is not None]
        p90 = percentile(ttfa, 90)
        slowest = [s for s in ok if s.ttfa_s is not None and p90 is not None and s.ttfa_s >= p90]
        latency = [s.total_s for s in ok]
        rtf = [s.rtf for s in ok if s.rtf is not None]
        return cls(
            label=label, concurrency=concurrency, requests=len(samples), errors=len(samples) - len(ok),
            ttfa_p50=percentile(ttfa, 50), ttfa_p90=p90, ttfa_p95=percentile(ttfa, 95),
            ttfa_p99=percentile(ttfa, 99), latency_p50=percentile(latency, 50), latency_p95=percentile(latency, 95),
            rtf_p50=percentile(rtf, 50), rtf_max=max(rtf) if rtf else None,
            stalled_streams=sum(1 for s in ok if (s.max_lag_s or 0.0) > 0.05),
            audio_s_per_wall_s=sum(s.audio_s for s in ok) / wall_s if wall_s else 0.0,
            first_audio_phases_ms=mean_of_samples(ok) or phases_ms,
            first_audio_phases_slowest_ms=mean_of_samples(slowest),
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(levels: list[LevelStats]) -> str:
    lines = [
        "| label | concurrency | requests | errors | TTFA p50 (ms) | p90 | p95 | p99 | latency p50 (s) | "
        "RTF p50 | RTF max | stalled streams | audio s / wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in levels:
        lines.append(
            f"| {s.label} | {s.concurrency} | {s.requests} | {s.errors} | {_ms(s.ttfa_p50)} | {_ms(s.ttfa_p90)} | "
            f"{_ms(s.ttfa_p95)} | {_ms(s.ttfa_p99)} | {_num(s.latency_p50, 2)} | {_num(s.rtf_p50)} | "
            f"{_num(s.rtf_max)} | {s.stalled_streams} | {s.audio_s_per_wall_s:.2f} |"
        )
    return "\n".join(lines) + _phases_markdown(levels)


def _phases_markdown(levels: list[LevelStats]) -> str:
    """The server's own account of the TTFA, where the server gives one: over all of a level's
    requests, and over its slowest tenth."""
    rows = [(s, "all", s.first_audio_phases_ms) for s in levels if s.first_audio_phases_ms]
    rows += [(s, "TTFA >= p90", s.first_audio_phases_slowest_ms) for s in levels if s.first_audio_phases_slowest_ms]
    if not rows:
        return ""
    names = list(dict.fromkeys(name for _, _, phases in rows for name in phases))
    lines = ["", "", "Server-side time to first audio, mean ms per phase:", "",
             "| label | concurrency | requests | " + " | ".join(names) + " | sum |",
             "|---|---|---|" + "---|" * (len(names) + 1)]
    for s, requests, phases in rows:
        cells = " | ".join(_num(phases.get(name), 1) for name in names)
        lines.append(f"| {s.label} | {s.concurrency} | {requests} | {cells} | {sum(phases.values()):.1f} |")
    return "\n".join(lines)


def write_json(path: Path, levels: list[LevelStats], samples: list[Sample], meta: dict) -> None:
    payload = {"meta": meta, "levels": [asdict(s) for s in levels],
               "samples": [asdict(s) | {"rtf": s.rtf} for s in samples]}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False))


def read_levels(path: Path) -> list[LevelStats]:
    """The statistics of an earlier ``write_json`` output, to table or plot runs together."""
    try:
        payload = json.loads(path.read_text())
        return [LevelStats(**level) for level in payload["levels"]]
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a JSON file written by `a10tts bench --json`: {exc}") from exc


def write_plot(path: Path, levels: list[LevelStats]) -> None:
    """TTFA p50/p95 and the worst per-stream RTF against concurrency, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ttfa, ax_rtf) = plt.subplots(1, 2, figsize=(11, 4))
    for label in dict.fromkeys(s.label for s in levels):
        rows = sorted((s for s in levels if s.label == label), key=lambda s: s.concurrency)
        x = [s.concurrency for s in rows]
        ax_ttfa.plot(x, [(s.ttfa_p50 or 0) * 1000 for s in rows], marker="o", label=f"{label} p50")
        ax_ttfa.plot(x, [(s.ttfa_p95 or 0) * 1000 for s in rows], marker="x", linestyle="--", label=f"{label} p95")
        ax_rtf.plot(x, [s.rtf_max or 0 for s in rows], marker="o", label=f"{label} worst stream")
    ax_ttfa.set(xlabel="concurrent streams", ylabel="time to first audio (ms)", xscale="log", title="TTFA")
    ax_rtf.set(xlabel="concurrent streams", ylabel="RTF (<1: faster than real time)", xscale="log",
               title="Per-stream real-time factor")
    ax_rtf.axhline(1.0, color="grey", linewidth=0.8)
    for ax in (ax_ttfa, ax_rtf):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
