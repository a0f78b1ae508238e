"""The LM's debug line on its step times, which `dev/gpu-serve-check` summarizes under load."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from a10tts.pipeline.llm_worker import StepLog

REPO = Path(__file__).resolve().parents[3]


def test_a_line_per_period_with_the_mean_step(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    log = StepLog(period_s=3600.0)
    with caplog.at_level(logging.DEBUG, logger="a10tts.pipeline.llm_worker"):
        log.add(0.004, rows=10)
        assert not caplog.records  # the period has not passed
        log.period_s = 0.0
        log.add(0.002, rows=20)
    [record] = caplog.records
    assert re.fullmatch(r"LM: 2 steps in [\d.]+ s, 3\.00 ms each, 15\.0 rows each", record.getMessage())
    assert log.steps == 0  # counting starts over

    # The summary script reads the line back.
    serve_log = tmp_path / "serve.log"
    serve_log.write_text("llm-0 DEBUG " + record.getMessage() + "\n")
    util = tmp_path / "util.csv"
    util.write_text("2026/11/27 06:50:01.123, 50, 100\n")
    out = subprocess.run([sys.executable, str(REPO / "dev" / "gpu_util_summary.py"), str(util), str(serve_log)],
                         capture_output=True, text=True, check=True).stdout
    assert "ms each (rows): 3.00(15)" in out and "% per 10 s: 50" in out
