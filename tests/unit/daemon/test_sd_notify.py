"""The sd_notify client against a real datagram socket, as systemd would hold it."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import pytest

from a10tts.daemon.sd_notify import Notifier


@pytest.fixture(params=["abstract", "path"])
def listener(request: pytest.FixtureRequest, tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = f"a10tts-unit-{uuid.uuid4().hex[:8]}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify")
        sock.bind(address)
    sock.settimeout(2)
    yield address, sock
    sock.close()


def test_sends_one_datagram_per_call(listener) -> None:
    address, sock = listener
    notifier = Notifier(address)
    notifier.ready("ready, profile balanced, 0.0 req/s, TTFA p50 -")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready, profile balanced, 0.0 req/s, TTFA p50 -"
    notifier.reloading()
    fields = dict(line.split("=") for line in sock.recv(4096).decode().splitlines())
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    notifier.extend_timeout(30)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=30000000"


def test_from_environment_takes_the_variables_away_from_children() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = Notifier.from_environment(env)
    assert env == {"PATH": "/bin"}
    assert notifier.enabled and notifier.watchdog_interval_s == 2.0


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None


def test_without_systemd_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled and notifier.send(READY=1) is False


def test_a_broken_socket_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.ERROR):
        assert notifier.send(WATCHDOG=1) is False
        assert notifier.send(WATCHDOG=1) is False
    assert len(caplog.records) == 1 and "cannot notify systemd (WATCHDOG)" in caplog.text
