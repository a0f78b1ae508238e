"""The admin socket client: progress until done, refusals, and every way of not getting through."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from a10tts.admin_client import (
    AdminClient,
    AdminError,
    AdminRefused,
    ServiceNotRunning,
)

from tui_fakes import RELOAD_OK, admin_server

TUI = Path(__file__).resolve().parents[2] / "tui"


def test_reload_yields_every_progress_line_until_done(tmp_path):
    path = tmp_path / "admin.sock"
    with admin_server(path, RELOAD_OK) as seen:
        answers = list(AdminClient(path).reload())
    assert [a.get("event") for a in answers] == ["validating", "draining", "restarting", "ready", None]
    assert answers[-1] == {"ok": True, "restarted": True, "profile": "low-latency", "done": True}
    assert seen == [{"cmd": "reload", "wait": True}]


def test_an_answer_without_progress_is_the_last_line(tmp_path):
    path = tmp_path / "admin.sock"
    with admin_server(path, [{"ok": True, "status": {"state": "ready"}}, {"ok": True, "never": "read"}]):
        answers = list(AdminClient(path).request({"cmd": "status"}))
    assert answers == [{"ok": True, "status": {"state": "ready"}}]


def test_refused_configuration_carries_the_services_message(tmp_path):
    path = tmp_path / "admin.sock"
    error = "invalid configuration (1 problem):\n  /etc/a10tts/conf.d/x.toml:2: server.prot: unknown key"
    answers = [{"ok": True, "event": "validating"}, {"ok": False, "error": error, "done": True}]
    with admin_server(path, answers):
        answers = AdminClient(path).reload()
        assert next(answers)["event"] == "validating"
        with pytest.raises(AdminRefused, match="server.prot: unknown key"):
            next(answers)


def test_missing_and_stale_sockets_mean_no_service(tmp_path):
    with pytest.raises(ServiceNotRunning, match="no admin socket at"):
        list(AdminClient(tmp_path / "admin.sock").reload())
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # left behind by a killed service: nothing accepts
    with pytest.raises(ServiceNotRunning, match="left over"):
        list(AdminClient(stale).reload())


def test_a_service_that_hangs_up_early_or_talks_nonsense(tmp_path):
    path = tmp_path / "admin.sock"
    with admin_server(path, [{"ok": True, "event": "draining"}]):
        with pytest.raises(AdminError, match="closed the admin connection"):
            list(AdminClient(path).reload())
    nonsense = tmp_path / "nonsense.sock"
    with admin_server(nonsense, ["hello"]):
        with pytest.raises(AdminError, match="not a JSON object"):
            list(AdminClient(nonsense).reload())


def test_a_silent_service_times_out(tmp_path):
    path = tmp_path / "admin.sock"
    with admin_server(path, [{"ok": True, "event": "draining"}, {"ok": True, "done": True}], delay_s=0.5):
        with pytest.raises(AdminError, match="sent nothing"):
            list(AdminClient(path, timeout_s=0.2).reload())


def test_permission_denied_tells_to_join_the_admin_group(tmp_path):
    """A real EACCES: a socket only root may use, and a client that is not root (root drops to nobody)."""
    path = tmp_path / "admin.sock"
    code = ("import os, sys; sys.path[:0] = sys.argv[1:3]\n"
            "from a10tts.admin_client import AdminClient\n"
            "if os.geteuid() == 0:\n    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "try:\n    list(AdminClient(sys.argv[3]).reload())\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    with admin_server(path, RELOAD_OK):
        os.chmod(path, 0)
        done = subprocess.run([sys.executable, "-c", code, str(TUI), str(TUI.parent / "service"), str(path)],
                              capture_output=True, text=True, timeout=30)
    assert done.stdout.startswith("AdminPermissionDenied permission denied on"), done.stdout + done.stderr
    assert "a10tts-admin" in done.stdout and "usermod" in done.stdout
