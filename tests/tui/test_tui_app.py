"""The dashboard driven by keys (Textual Pilot): help, quit, probe, differences, and the
profile switch end to end with a temporary configuration directory."""

from __future__ import annotations

import re
import socket

import pytest

from a10tts_tui.app import A10ttsApp
from a10tts_tui.sources import Sources
from a10tts.admin_client import AdminClient
from a10tts_tui.sources.nvml import NvmlSource, NvmlState
from a10tts_tui.sources.server import ServerClient
from a10tts_tui.sources.systemd import systemd_unavailable

from tui_fakes import RELOAD_OK, StatusServer, admin_server
from tui_screen import text_of, wait_for, wait_for_text

pytestmark = pytest.mark.asyncio

BROKEN = "# Broken on purpose\n[server]\nhttp_workers = \"many\"\n"


def make_app(options, **replace) -> A10ttsApp:
    sources = Sources.from_options(options)
    for name, source in replace.items():
        setattr(sources, name, source)
    return A10ttsApp(options, sources)


async def test_help_lists_every_key_and_q_quits(options):
    app = make_app(options)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        text = await wait_for_text(pilot, "Keys")
        for key, words in [("1 … 9", "switch to the profile"), ("d", "differences"), ("p", "probe"),
                           ("r", "refresh"), ("q", "quit")]:
            assert re.search(rf"\s{re.escape(key)}  {words}", text), key
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(app.screen_stack) == 1)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running)


async def test_no_gpu_no_service_no_systemd_is_explained_not_crashed(options):
    """What CI really has: nvidia-ml-py without a driver, nothing on the port, no systemd."""
    if NvmlSource.system().read().state is NvmlState.OK or systemd_unavailable() is None:
        pytest.skip("this host has a GPU driver or systemd")
    app = make_app(options)
    async with app.run_test(size=(160, 48)) as pilot:
        text = await wait_for_text(pilot, "No GPU metrics (", "not listening", "unreachable",
                                   "systemd not available")
        assert "driver" in text.split("No GPU metrics (")[1][:300]
        assert "no data: the service is unreachable" in text


async def test_switch_without_a_service_records_the_profile(options, dirs):
    app = make_app(options)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_text(pilot, "throughput")
        await pilot.press("3")
        text = await wait_for_text(pilot, "Switch from balanced to throughput?")
        assert "server.http_workers" in text and "2 → 3" in text
        await pilot.press("y")
        text = await wait_for_text(pilot, "no a10tts service is running", "esc close")
        assert "profile 'throughput' is now active" in text
        assert [step.kind for step in app.screen.steps] == ["recorded", "not_running"]
        assert app.screen.steps[-1].message.endswith("the profile applies when the service starts")
        assert dirs.active_profile_file.read_text() == "throughput\n"
        await pilot.press("escape")
        await wait_for(pilot, lambda: "● throughput" in text_of(app), what="the new active profile marked")


async def test_cancelled_switch_changes_nothing(options, dirs):
    app = make_app(options)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_for_text(pilot, "throughput")
        await pilot.press("2")
        await wait_for_text(pilot, "Switch from balanced to low-latency?")
        await pilot.press("n")
        await wait_for(pilot, lambda: len(app.screen_stack) == 1)
        assert not dirs.active_profile_file.exists()
        await pilot.press("7")  # no seventh profile
        await wait_for_text(pilot, "there is no profile 7")


async def test_refused_configuration_shows_every_problem_and_records_nothing(options, dirs):
    (dirs.profiles / "broken.toml").write_text(BROKEN)
    app = make_app(options)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_text(pilot, "2   broken")
        await pilot.press("2")
        text = await wait_for_text(pilot, "Switch from balanced to broken?")
        assert "server.http_workers" in text and "invalid value" in text
        await pilot.press("y")
        text = await wait_for_text(pilot, "profile 'broken' was not recorded", "esc close")
        assert "broken.toml" in text and '"many"' in text
        assert [step.kind for step in app.screen.steps] == ["refused"]
        assert not dirs.active_profile_file.exists()


class DeniedAdmin(AdminClient):
    """The admin socket as a user outside the a10tts-admin group meets it (these tests run as
    root, who is never denied; test_tui_admin.py gets the real EACCES in a child process)."""

    def _open(self) -> socket.socket:
        raise PermissionError(13, "Permission denied", str(self.socket_path))


async def test_permission_denied_explains_the_admin_group_and_keeps_the_profile(options, dirs):
    dirs.admin_socket.touch()
    app = make_app(options, admin=DeniedAdmin(dirs.admin_socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_text(pilot, "low-latency")
        await pilot.press("2", "y")
        text = await wait_for_text(pilot, "permission denied on", "esc close")
        assert "a10tts-admin" in text and "usermod" in text
        assert [step.kind for step in app.screen.steps] == ["recorded", "denied"]
        assert app.screen.steps[-1].message.endswith("applies when the service restarts")
        assert dirs.active_profile_file.read_text() == "low-latency\n"


async def test_switch_shows_reload_progress_until_ready_and_ttfa_before_and_after(options, dirs):
    with StatusServer(first_audio_delay_s=0.05) as server, \
            admin_server(dirs.admin_socket, RELOAD_OK, delay_s=0.05) as commands:
        app = make_app(options, server=ServerClient(server.url))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for_text(pilot, "ready", "low-latency")
            await pilot.press("2", "y")
            text = await wait_for_text(pilot, "the service runs profile 'low-latency'",
                                       "TTFA (probe): before")
            lines = text.splitlines()
            order = [next(i for i, line in enumerate(lines) if word in line)
                     for word in ("is now active", "validating", "draining", "restarting", "runs profile")]
            assert order == sorted(order)
            ttfa = next(line for line in lines if "TTFA (probe): before" in line)
            assert ttfa.count(" ms") == 2, ttfa
            before, after = app.screen.ttfa
            assert before.ttfa_s >= 0.05 and after.ttfa_s >= 0.05
        assert commands == [{"cmd": "reload", "wait": True}]
        assert len(server.probes) == 2  # one probe before, one after


async def test_hiding_the_progress_does_not_stop_the_switch(options, dirs):
    with admin_server(dirs.admin_socket, RELOAD_OK, delay_s=0.2) as commands:
        app = make_app(options)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await wait_for_text(pilot, "throughput")
            await pilot.press("3", "y")
            await wait_for_text(pilot, "is now active")
            await pilot.press("escape")
            progress = app.screen_stack[-1]
            assert len(app.screen_stack) == 1, progress
            await wait_for_text(pilot, "the service runs profile 'low-latency'")  # the closing notification
            await wait_for_text(pilot, "● throughput")
    assert commands == [{"cmd": "reload", "wait": True}]


async def test_probe_key_shows_the_client_side_ttfa(options):
    with StatusServer(first_audio_delay_s=0.2) as server:
        app = make_app(options, server=ServerClient(server.url))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for_text(pilot, "press p to measure")
            await pilot.press("p")
            text = await wait_for_text(pilot, "client-side")
            assert 0.2 <= app.probe.ttfa_s < 5
            assert f"probe: {round(app.probe.ttfa_s * 1000)} ms client-side" in text
        assert len(server.probes) == 1


async def test_differences_on_demand(options):
    app = make_app(options)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_text(pilot, "throughput")
        await pilot.press("d")
        text = await wait_for_text(pilot, "Differences from balanced", "balanced → low-latency",
                                   "balanced → throughput")
        assert "server.http_workers" in text and "decode.max_batch_size" in text


async def test_keys_answer_while_the_service_hangs(options):
    with StatusServer() as server:
        server.hang.set()  # every HTTP request blocks: the poll thread is stuck
        app = make_app(options, server=ServerClient(server.url, timeout_s=30))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for_text(pilot, "throughput")
            await pilot.press("question_mark")
            await wait_for_text(pilot, "Keys", timeout_s=2)
            await pilot.press("escape", "r", "r")  # refreshing again does not pile up stuck polls
            assert sum(1 for w in app.workers if w.group == "server" and not w.is_finished) == 1
            server.hang.clear()
