"""The dashboard against a real `a10tts serve --demo` (CPU, no systemd): real sockets, real
HTTP, the real admin socket. One service is shared by the module; the tests run in order.

Runs only once the service exists (`a10tts.daemon.supervisor`); until then it is reported as
skipped, not passed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from a10tts.config import Dirs
from a10tts_tui.app import A10ttsApp
from a10tts_tui.options import parse

from tui_screen import wait_for, wait_for_text

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "a10tts"
START_TIMEOUT_S = 240

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("a10tts.daemon.supervisor") is None,
                       reason="`a10tts serve` (a10tts.daemon) is not built yet"),
]


@dataclass
class LiveService:
    url: str
    dirs: Dirs
    log: Path

    def tui_args(self) -> list[str]:
        return ["--url", self.url, "--config-dir", str(self.dirs.config), "--state-dir", str(self.dirs.state),
                "--runtime-dir", str(self.dirs.runtime)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_service(tmp_path_factory) -> Iterator[LiveService]:
    root = tmp_path_factory.mktemp("live")
    shutil.copytree(SHIPPED_CONFIG, root / "etc")
    dirs = Dirs(root / "etc", root / "state", root / "run", root / "cache")
    for path in (dirs.state, dirs.runtime):
        path.mkdir()
    port = _free_port()
    log = root / "serve.log"
    # Fewest processes the 2-core CI machine can spare; the profiles still differ in other keys.
    env = {k: v for k, v in os.environ.items() if not k.startswith("A10TTS_") and k != "NOTIFY_SOCKET"}
    env.update(A10TTS_SERVER__HTTP_WORKERS="1", A10TTS_DECODE__PROCESSES="1", A10TTS_ENCODE__PROCESSES="1")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "a10tts.cli", "serve", "--demo", "--port", str(port),
             "--config-dir", str(dirs.config), "--state-dir", str(dirs.state),
             "--runtime-dir", str(dirs.runtime), "--set", "server.host=127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    service = LiveService(f"http://127.0.0.1:{port}", dirs, log)
    try:
        _wait_ready(service, process)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(service: LiveService, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"a10tts serve exited with {process.returncode}:\n{service.log.read_text()[-3000:]}")
        try:
            if httpx.get(service.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"a10tts serve not ready after {START_TIMEOUT_S} s:\n{service.log.read_text()[-3000:]}")


async def test_dashboard_shows_the_running_service(live_service):
    app = A10ttsApp(parse(live_service.tui_args()))
    async with app.run_test(size=(160, 48)) as pilot:
        text = await wait_for_text(pilot, "listening by pid", "a10tts serve", "ready", "alive",
                                   "model demo on cpu")
        assert "profile balanced" in text and "1 ● balanced" in text
        stages = app.server.get("stages")
        assert f"stages {len(stages)}/{len(stages)} alive" in text
        assert app.port.owner_pids & {stage["pid"] for stage in stages}


async def test_probe_measures_the_real_time_to_first_audio(live_service):
    app = A10ttsApp(parse(live_service.tui_args()))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_text(pilot, "ready")
        await pilot.press("p")
        await wait_for(pilot, lambda: app.probe is not None, timeout_s=120, what="the probe")
        assert app.probe.error == "" and 0 < app.probe.ttfa_s < 60
        await wait_for_text(pilot, "client-side")


async def test_switch_reloads_the_service_through_the_admin_socket(live_service):
    app = A10ttsApp(parse(live_service.tui_args()))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_text(pilot, "ready", "low-latency")
        await pilot.press("2", "y")
        await wait_for(pilot, lambda: getattr(app.screen, "done", False), timeout_s=300, what="the switch")
        steps = app.screen.steps
        assert steps[-1].kind == "ready", [(s.kind, s.message) for s in steps]
        messages = [s.message for s in steps]
        for phase in ("validating the configuration", "restarting the workers"):
            assert any(m.startswith(phase) for m in messages), messages
        assert live_service.dirs.active_profile_file.read_text() == "low-latency\n"
        await wait_for_text(pilot, "TTFA (probe): before")
        before, after = app.screen.ttfa
        assert before.ttfa_s > 0 and after.ttfa_s > 0, (before, after)
        await pilot.press("escape", "r")
        await wait_for(pilot, lambda: app.server and app.server.get("profile") == "low-latency", timeout_s=30,
                       what="/v1/status to report the new profile")
        await wait_for_text(pilot, "2 ● low-latency")
