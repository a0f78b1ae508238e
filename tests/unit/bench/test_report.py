"""Benchmark statistics and their outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from a10tts.bench.load import Sample, num_tokens_ignored
from a10tts.api.responses import server_timing
from a10tts.bench.phases import mean_ms, read_totals, server_timing_ms
from a10tts.bench.report import LevelStats, markdown, percentile, write_json, write_plot


def sample(ttfa: float | None, total: float, audio: float, lag: float = 0.0, error: str | None = None) -> Sample:
    return Sample(4, "en", 200 if error is None else 503, error, ttfa, total, audio, lag)


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)


def test_level_stats_count_errors_stalls_and_throughput() -> None:
    samples = [sample(0.1, 2.0, 4.0), sample(0.3, 3.0, 2.0, lag=0.2), sample(None, 0.5, 0.0, error="busy")]
    stats = LevelStats.of("x", 4, samples, wall_s=3.0)
    assert (stats.requests, stats.errors, stats.stalled_streams) == (3, 1, 1)
    assert stats.ttfa_p50 == pytest.approx(0.2)
    assert stats.rtf_max == pytest.approx(1.5)  # 3 s for 2 s of audio: slower than real time
    assert stats.audio_s_per_wall_s == pytest.approx(2.0)
    table = markdown([stats])
    assert table.splitlines()[2].startswith("| x | 4 | 3 | 1 | 200 |")


def test_json_and_plot_outputs(tmp_path: Path) -> None:
    levels = [LevelStats.of("a10tts", c, [sample(0.05 * c, 1.0, 2.0)], 1.0) for c in (1, 4, 16)]
    write_json(tmp_path / "run.json", levels, [sample(0.05, 1.0, 2.0)], {"url": "http://x"})
    data = json.loads((tmp_path / "run.json").read_text())
    assert [level["concurrency"] for level in data["levels"]] == [1, 4, 16]
    assert data["samples"][0]["rtf"] == 0.5
    write_plot(tmp_path / "plot.png", levels)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_combine_tables_and_plots_earlier_runs(tmp_path: Path) -> None:
    from a10tts.cli import main

    for label, ttfa in (("ours", 0.3), ("theirs", 3.0)):
        levels = [LevelStats.of(label, c, [sample(ttfa * c, 10.0, 8.0)], 10.0) for c in (1, 4)]
        write_json(tmp_path / f"{label}.json", levels, [], {})
    table, png = tmp_path / "both.md", tmp_path / "both.png"
    code = main(["bench", "--combine", str(tmp_path / "ours.json"), str(tmp_path / "theirs.json"),
                 "--markdown", str(table), "--plot", str(png)])
    assert code == 0
    rows = table.read_text().splitlines()[2:]
    assert [row.split(" | ")[:2] for row in rows] == [["| ours", "1"], ["| ours", "4"], ["| theirs", "1"], ["| theirs", "4"]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_combine_rejects_a_file_that_is_not_a_bench_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from a10tts.cli import main

    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert main(["bench", "--combine", str(tmp_path / "other.json")]) == 2
    assert "not a JSON file written by `a10tts bench --json`" in capsys.readouterr().err
    assert main(["bench", "--combine", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_phase_means_are_per_level_and_only_where_the_server_has_them() -> None:
    """A server without Server-Timing (an older a10tts): the means of its /metrics histograms."""
    before = {"encode": (1.0, 10.0), "vocode": (5.0, 10.0)}
    after = {"encode": (1.2, 14.0), "vocode": (5.4, 14.0), "deliver": (0.004, 4.0)}
    assert mean_ms(before, after) == pytest.approx({"encode": 50.0, "vocode": 100.0, "deliver": 1.0})
    assert mean_ms(None, after) is None and mean_ms(before, before) is None
    assert read_totals("http://127.0.0.1:9") is None  # nothing listens there: no breakdown, no error
    stats = LevelStats.of("x", 1, [sample(0.2, 1.0, 2.0)], 1.0, phases_ms={"encode": 5.0, "vocode": 95.0})
    table = markdown([stats, LevelStats.of("other server", 1, [sample(0.3, 1.0, 2.0)], 1.0)])
    assert table.splitlines()[-1] == "| x | 1 | all | 5.0 | 95.0 | 100.0 |"
    assert "other server" not in table.split("mean ms per phase")[1]


def test_server_timing_headers_are_read_leniently() -> None:
    header = 'encode;dur=4.1, lm_first_token;desc="prefill";dur=7, cache;desc=hit, bad;dur=abc, ;dur=3'
    assert server_timing_ms(header) == {"encode": 4.1, "lm_first_token": 7.0}
    assert server_timing_ms(None) is None and server_timing_ms("cache;desc=hit") is None
    phases_s = {"encode": 0.00412, "vocode": 0.031}
    assert server_timing_ms(server_timing(phases_s)) == {"encode": 4.1, "vocode": 31.0}  # what the service sends


def test_phases_come_from_the_measured_requests_and_their_slowest_tenth() -> None:
    """Each request's own phases (Server-Timing) win over the /metrics means, which count the
    warm-up and ramp-up requests too; the requests at or above TTFA p90 get their own row."""
    samples = [dataclasses.replace(sample(0.1, 1.0, 2.0), phases_ms={"lm": 40.0, "vocode": 60.0}) for _ in range(9)]
    samples.append(dataclasses.replace(sample(0.5, 1.0, 2.0), phases_ms={"lm": 40.0, "vocode": 460.0}))
    samples.append(sample(None, 0.5, 0.0, error="busy"))  # failed: no phases, not counted
    stats = LevelStats.of("x", 8, samples, 1.0, phases_ms={"lm": 1.0, "vocode": 1.0})
    assert stats.first_audio_phases_ms == pytest.approx({"lm": 40.0, "vocode": 100.0})
    assert stats.first_audio_phases_slowest_ms == pytest.approx({"lm": 40.0, "vocode": 460.0})
    assert markdown([stats]).splitlines()[-2:] == ["| x | 8 | all | 40.0 | 100.0 | 140.0 |",
                                                   "| x | 8 | TTFA >= p90 | 40.0 | 460.0 | 500.0 |"]



def test_a_server_that_ignores_num_tokens_is_caught() -> None:
    eight_seconds = 200 * 960 / 24000
    assert num_tokens_ignored([sample(0.1, 1.0, eight_seconds), sample(0.1, 2.0, 2 * eight_seconds)], 200) is None
    assert num_tokens_ignored([sample(None, 0.5, 0.0, error="busy")], 200) is None  # failures are counted elsewhere
    problem = num_tokens_ignored([sample(0.1, 1.0, eight_seconds), sample(0.1, 1.0, 6.32)], 200)
    assert problem is not None and "ignored --num-tokens 200" in problem and "6.32 s" in problem
