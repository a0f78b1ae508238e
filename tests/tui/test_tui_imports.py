"""The dashboard starts without torch and without the engine (rules of the house)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys, time
start = time.perf_counter()
from a10tts.config import Dirs
from a10tts_tui.app import A10ttsApp
from a10tts_tui.options import Options

async def run():
    d = sys.argv[1]
    dirs = Dirs.resolve(d + "/etc", d + "/state", d + "/run")
    app = A10ttsApp(Options(dirs, "http://127.0.0.1:9", "127.0.0.1", 9, "a10tts", 3600))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.5)  # every source polled once: the lazily imported modules are in
        await pilot.press("question_mark", "escape", "d")
        await pilot.pause(0.2)

asyncio.run(run())
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "a10tts.engine")))
print("LOADED", loaded)
print("SOURCES", sorted(m for m in sys.modules if m.startswith("a10tts_tui.sources.")))
print("SHARED", sorted(m for m in sys.modules if m in ("a10tts.admin_client", "a10tts.profile_switch")))
"""


def test_no_torch_and_no_engine_in_a_running_dashboard(tmp_path, config_dir):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout
    for source in ("nvml", "ports", "server", "systemd"):
        assert f"'a10tts_tui.sources.{source}'" in done.stdout  # the check covered every source
    assert "SHARED ['a10tts.admin_client', 'a10tts.profile_switch']" in done.stdout
