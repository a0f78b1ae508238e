"""Snapshot tests: the whole dashboard at 80x24 and 160x48 with fixed data, compared as text.

The expected screens are in snapshots/*.txt. After a deliberate change of the layout, rewrite
them with `UPDATE_TUI_SNAPSHOTS=1 pytest tests/tui/test_tui_snapshots.py` and review the diff;
the SVG screenshots of a failing run are kept in pytest's temporary directory.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from a10tts_tui.app import A10ttsApp
from a10tts_tui.sources import Sources
from a10tts_tui.sources.nvml import NvmlSource
from a10tts_tui.sources.ports import Listener, PortSnapshot
from a10tts_tui.sources.server import ServerSnapshot
from a10tts_tui.sources.systemd import JournalTail, parse_show

from tui_fakes import GPU, SHOW, STATUS, fake_nvml
from tui_screen import screen_text, text_of, wait_for, wait_for_text

pytestmark = pytest.mark.asyncio

SNAPSHOTS = Path(__file__).parent / "snapshots"
URL = "http://127.0.0.1:8080"
TTFA = [(0.118, 0.290), (0.121, 0.310), (0.140, 0.420), (0.125, 0.330), (0.119, 0.305), (0.121, 0.310)]
JOURNAL = ["2025-11-27T10:00:00+0000 host a10tts[4242]: loading model /var/lib/a10tts/models/demo",
           "2025-11-27T10:00:03+0000 host a10tts[4242]: warm-up synthesis passed, ready",
           "2025-11-27T10:00:03+0000 host systemd[1]: Started a10tts.service - a10tts text to speech."]


class FixedGpus:
    def __init__(self, gpus):
        self._source = NvmlSource(fake_nvml(gpus=gpus, processes={0: [(4242, 9 * 2**30)]}))

    def read(self, service_pids=()):
        return self._source.read({4242})

    def close(self):
        pass


class FixedPort:
    def read(self):
        return PortSnapshot("0.0.0.0", 8080, True, (Listener("0.0.0.0:8080", 4242, "a10tts serve"),), 3)


class ScriptedServer:
    """The service's answers, one TTFA point per poll."""

    def __init__(self):
        self.reads = 0

    def read(self):
        p50, p95 = TTFA[min(self.reads, len(TTFA) - 1)]
        self.reads += 1
        status = dict(STATUS, ttfa_s=dict(STATUS["ttfa_s"], p50=p50, p95=p95))
        return ServerSnapshot(URL, True, True, status, at=0.0)


class FixedUnit:
    def read(self):
        return parse_show("a10tts", SHOW)

    def unavailable_reason(self):
        return None


def dashboard(options, gpus) -> tuple[A10ttsApp, ScriptedServer]:
    options = replace(options, url=URL, host="0.0.0.0", port=8080)
    prints = "".join(f"print({line!r}, flush=True)\n" for line in JOURNAL)
    script = f"import time\n{prints}time.sleep(60)"
    server = ScriptedServer()
    sources = replace(Sources.from_options(options), gpu=FixedGpus(gpus), port=FixedPort(), server=server,
                      unit=FixedUnit(), journal=JournalTail("a10tts", argv=[sys.executable, "-c", script]))
    return A10ttsApp(options, sources), server


def compare(name: str, svg: str, tmp_path: Path) -> None:
    actual = "\n".join(screen_text(svg)) + "\n"
    expected_file = SNAPSHOTS / f"{name}.txt"
    (tmp_path / f"{name}.svg").write_text(svg)
    if os.environ.get("UPDATE_TUI_SNAPSHOTS") == "1":
        expected_file.write_text(actual)
    expected = expected_file.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                        "expected", "actual"))
    assert actual == expected, f"screen differs from {expected_file} (SVG in {tmp_path}):\n{diff}"


async def settle(pilot, server: ScriptedServer) -> None:
    """Every panel filled, exactly one poll per TTFA point, and the journal shown."""
    def idle() -> bool:
        return not any(w.group == "server" and not w.is_finished for w in pilot.app.workers)

    await wait_for_text(pilot, "warm-up synthesis passed")
    for polls in range(1, len(TTFA) + 1):
        await wait_for(pilot, idle)
        if server.reads < polls:
            await pilot.press("r")
        await wait_for(pilot, lambda polls=polls: server.reads >= polls and idle())
    assert server.reads == len(TTFA)
    await pilot.pause(0.1)


async def test_80x24_shows_every_panel_but_the_journal_on_one_screen(options, tmp_path):
    app, server = dashboard(options, [GPU])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_text(pilot, "NVIDIA A10")
        await pilot.press("end")  # the journal is below the fold on a small terminal
        await settle(pilot, server)
        await pilot.press("home")
        await pilot.pause(0.1)
        text = text_of(app)
        for needle in ("NVIDIA A10", "util  45%", "0.0.0.0:8080  listening", "active (running)",
                       "window 60 s", "p95   310 ms", "1 ● balanced", "3   throughput", "q Quit"):
            assert needle in text, needle
        assert max(len(line) for line in text.splitlines()) <= 80
        compare("dashboard_80x24", app.export_screenshot(), tmp_path)


async def test_160x48_uses_the_space(options, tmp_path):
    app, server = dashboard(options, [GPU, dict(GPU, name="NVIDIA A10", util=3, used=2**30, temp=38,
                                                  power_mw=None, ecc_corrected=1)])
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, server)
        text = text_of(app)
        header = next(line for line in text.splitlines() if "Clocks SM/Mem" in line)
        columns = ("GPU", "Util", "Memory", "Temp", "Power", "PCIe TX/RX", "ECC C/U")
        assert all(column in header for column in columns)
        assert "GPU 0 a10tts: 4242 llm-0 9.0 GiB" in text  # named after its stage in /v1/status
        assert all(line in text for line in JOURNAL)
        compare("dashboard_160x48", app.export_screenshot(), tmp_path)
