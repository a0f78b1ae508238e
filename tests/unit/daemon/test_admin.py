"""The admin socket protocol: JSON lines, progress then a last `done` line; client errors that say what to do."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from a10tts.commands.ctl_cmd import describe, reload_service
from a10tts.admin_client import AdminClient, AdminRefused, ServiceNotRunning
from a10tts.daemon.admin import AdminServer, Progress


class FakeService:
    """Stands in for the supervisor (unit test of the protocol only)."""

    def __init__(self) -> None:
        self.reloads: list[str | None] = []

    def status(self) -> dict[str, Any]:
        return {"state": "ready"}

    async def reload(self, progress: Progress, profile: str | None = None) -> dict[str, Any]:
        self.reloads.append(profile)
        if profile == "broken":
            return {"ok": False, "error": "invalid configuration (1 problem)"}
        for event in ("validating", "draining", "restarting", "ready"):
            await progress({"ok": True, "event": event})
        return {"ok": True, "restarted": True, "profile": profile or "balanced"}

    async def drain(self) -> dict[str, Any]:
        return {"ok": True, "drained": True, "in_flight": 0}


@pytest.fixture
def served(tmp_path: Path):
    path = tmp_path / "admin.sock"
    service = FakeService()
    loop = asyncio.new_event_loop()
    server = AdminServer(path, service)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    yield path, service
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_socket_is_group_only(served) -> None:
    path, _ = served
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_status(served) -> None:
    path, _ = served
    assert list(AdminClient(path).request({"cmd": "status"})) == [{"ok": True, "done": True, "status": {"state": "ready"}}]


def test_reload_streams_progress_then_done(served) -> None:
    path, service = served
    answers = list(AdminClient(path).request({"cmd": "profile", "name": "throughput"}))
    assert [a.get("event") for a in answers] == ["validating", "draining", "restarting", "ready", None]
    assert answers[-1] == {"ok": True, "restarted": True, "profile": "throughput", "done": True}
    assert service.reloads == ["throughput"]


def test_reload_service_prints_progress_and_refusals(served, capsys: pytest.CaptureFixture) -> None:
    path, _ = served
    assert reload_service(path, {"cmd": "reload", "wait": True}) == 0
    assert "restarting the workers" in capsys.readouterr().out
    assert reload_service(path, {"cmd": "profile", "name": "broken"}) == 1
    assert "reload refused: invalid configuration" in capsys.readouterr().err


@pytest.mark.parametrize("line, error", [
    (b"not json\n", "not a JSON line"),
    (b'{"cmd": "explode"}\n', "unknown command 'explode'"),
    (b'{"cmd": "profile"}\n', 'profile needs "name"'),
])
def test_bad_requests_get_an_error_line(served, line: bytes, error: str) -> None:
    path, _ = served
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(line)
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["ok"] is False and answer["done"] is True and error in answer["error"]


def test_no_service_says_so(tmp_path: Path) -> None:
    with pytest.raises(ServiceNotRunning, match="no a10tts service is running here"):
        next(AdminClient(tmp_path / "admin.sock").request({"cmd": "status"}))


def test_a_refusal_raises_with_the_services_message(served) -> None:
    path, _ = served
    with pytest.raises(AdminRefused, match="invalid configuration"):
        list(AdminClient(path).request({"cmd": "profile", "name": "broken"}))


def test_describe_renders_the_status_document() -> None:
    status = {
        "version": "0.1.0", "state": "ready", "since": 0.0, "profile": "balanced",
        "model": {"dir": "/m", "demo": True, "device": "cpu", "precision": {"llm": "bfloat16"}},
        "server": {"host": "0.0.0.0", "port": 8080, "http_workers": 2},
        "requests": {"running": None, "waiting": None, "total": 3, "failed": 0, "per_second": 0.5},
        "ttfa_s": {"p50": 0.12, "p95": None, "window_s": 60},
        "stages": [{"stage": "llm", "index": 0, "pid": 7, "alive": True, "ready": True,
                    "heartbeat_age_s": 0.3, "restarts": 1}],
    }
    text = "\n".join(describe(status))
    assert "profile balanced" in text and "(demo: noise) on cpu" in text and "p50 120 ms, p95 -" in text
    assert "llm-0" in text and "restarts 1" in text and "by phase" not in text  # none reported yet
    status["ttfa_phases_p50_s"] = {"encode": 0.004, "vocode": 0.1}
    assert "  by phase  encode 4 ms, vocode 100 ms (p50 of each)" in describe(status)
