"""The shipped systemd units under a real systemd 252 (PID 1 of private namespaces, see booted.py).

The unit runs unmodified except for a drop-in: `serve --demo` (the tiny CPU model), a short
WatchdogSec and RestartSec for speed, and, when this checkout or its Python lives under /root,
/home or /tmp (a developer's or CI's clone; the .deb installs under /opt and /usr), what makes
them visible to the sandboxed service: ProtectHome=tmpfs + BindReadOnlyPaths=, PrivateTmp=no. `/usr/bin/a10tts` is a wrapper around this checkout's venv, in the namespace only.
One booted systemd is shared by the module; tests run in order.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from booted import BootedSystemd

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "packaging" / "systemd"
CLIENT = Path(__file__).with_name("stream_client.py")
VENV_BIN = Path(sys.executable).parent
UNIT = "a10tts.service"
MAX_EXPOSURE = 5.0  # `systemd-analyze security`: below 5 is "OK"; docs/operations.md has the score


def _drop_in() -> str:
    """Test-only concessions so the sandboxed unit can see this checkout, its venv and Python
    wherever they live (the .deb installs under /opt and /usr, where none of this applies)."""
    lines = ["[Service]", "ExecStart=", "ExecStart=/usr/bin/a10tts serve --demo", "WatchdogSec=3", "RestartSec=1"]
    needed = {Path(sys.base_prefix).resolve(), REPO}
    in_home = sorted(str(p) for p in needed if p.is_relative_to("/root") or p.is_relative_to("/home"))
    if in_home:
        lines += ["ProtectHome=tmpfs", *(f"BindReadOnlyPaths={path}" for path in in_home)]
    if any(p.is_relative_to("/tmp") or p.is_relative_to("/var/tmp") for p in needed):
        lines += ["PrivateTmp=no"]  # a private /tmp would hide a checkout (e.g. a CI clone) there
    return "\n".join(lines) + "\n"


SETUP = f"""
getent group render >/dev/null || groupadd --system render
groupadd --system a10tts-admin
useradd --system --user-group --home-dir /var/lib/a10tts --no-create-home --shell /usr/sbin/nologin a10tts
cp -r {REPO}/etc/a10tts /etc/a10tts
printf '#!/bin/sh\\nexec {VENV_BIN}/a10tts "$@"\\n' > /usr/bin/a10tts
chmod 0755 /usr/bin/a10tts
cp {UNITS}/a10tts.service {UNITS}/a10tts@.service /etc/systemd/system/
mkdir -p /etc/systemd/system/a10tts.service.d /run/verify
cp {UNITS}/a10tts.service {UNITS}/a10tts@.service /run/verify/
printf '%s' "$DROP_IN" > /etc/systemd/system/a10tts.service.d/50-test.conf
"""


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedSystemd]:
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    booted = BootedSystemd(SETUP, tmp_path_factory.mktemp("systemd") / "boot.log", env={"DROP_IN": _drop_in()})
    try:
        booted.wait_running()
        yield booted
    finally:
        booted.shutdown()


def client(system: BootedSystemd, *args: str) -> list[str]:
    return system.in_network(sys.executable, str(CLIENT), *args)


def stream_once(system: BootedSystemd, text: str = "Hello from the system test.") -> dict:
    result = subprocess.run(client(system, "--once", "--text", text), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ctl_status(system: BootedSystemd) -> dict:
    return json.loads(system.run("/usr/bin/a10tts", "ctl", "status", "--json").stdout)


def in_flight(status: dict) -> int:
    return (status["requests"]["running"] or 0) + (status["requests"]["waiting"] or 0)


def wait_for(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def test_units_verify_clean(system: BootedSystemd) -> None:
    result = system.run("systemd-analyze", "verify", "/run/verify/a10tts.service", "/run/verify/a10tts@0.service",
                        check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_security_exposure_is_low(system: BootedSystemd) -> None:
    text = system.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", text)
    assert found, text[-2000:]
    assert float(found.group(1)) <= MAX_EXPOSURE, text


def test_start_returns_only_once_ready(system: BootedSystemd) -> None:
    system.systemctl("start", UNIT, timeout=280)
    # `start` of a Type=notify unit returns at READY=1: everything is up at this very moment.
    assert system.systemctl("is-active", UNIT, check=False).stdout.strip() == "active"
    assert system.show(UNIT, "StatusText").startswith("ready, profile balanced")
    probe = subprocess.run(system.in_network("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                             "http://127.0.0.1:8080/readyz"), capture_output=True, text=True)
    assert probe.stdout == "200"
    journal = system.journal(UNIT)
    assert "warm-up synthesis passed" in journal
    main_pid = system.show(UNIT, "MainPID")
    assert system.run("ps", "-o", "user=", "-p", main_pid).stdout.strip() == "a10tts"
    assert system.run("stat", "-c", "%a %G", "/run/a10tts/admin.sock").stdout.split() == ["660", "a10tts-admin"]


def test_streaming_request_returns_audio(system: BootedSystemd) -> None:
    outcome = stream_once(system)
    assert outcome["status"] == 200, outcome
    assert outcome["bytes"] > 2400 and outcome["bytes"] % 2 == 0


def test_reload_switches_profile_without_failing_a_request(system: BootedSystemd, tmp_path: Path) -> None:
    main_pid = system.show(UNIT, "MainPID")
    out, stop = tmp_path / "requests.jsonl", tmp_path / "stop"
    streaming = subprocess.Popen(client(system, "--loop", "--out", str(out), "--stop-file", str(stop)),
                                 stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= 1, "a first request", 60)
        system.run("sh", "-c", "echo low-latency > /var/lib/a10tts/active-profile")
        reloaded_at = time.time()
        system.systemctl("reload", UNIT, timeout=240)
        done_reloading = time.time()
        wait_for(lambda: sum(json.loads(line)["start"] > done_reloading for line in out.read_text().splitlines()) >= 2,
                 "requests after the reload", 60)
    finally:
        stop.touch()
        streaming.wait(120)
    outcomes = [json.loads(line) for line in out.read_text().splitlines()]
    failed = [o for o in outcomes if o["status"] != 200 or o["bytes"] == 0]
    assert not failed, failed
    assert any(o["start"] < done_reloading and o["end"] > reloaded_at for o in outcomes), "none spanned the reload"
    status = ctl_status(system)
    assert status["profile"] == "low-latency" and status["server"]["http_workers"] == 1
    assert len(status["stages"]) == 4  # api, encode, llm, decode: one each
    # A reload is not a restart: same main process, still active.
    assert system.show(UNIT, "MainPID") == main_pid and system.show(UNIT, "NRestarts") == "0"
    assert system.show(UNIT, "StatusText").startswith("ready, profile low-latency")


def test_a_frozen_stage_makes_the_watchdog_restart_the_unit(system: BootedSystemd) -> None:
    llm = next(s for s in ctl_status(system)["stages"] if s["stage"] == "llm")
    system.run("kill", "-STOP", str(llm["pid"]))
    wait_for(lambda: int(system.show(UNIT, "NRestarts")) >= 1, "a watchdog restart", 90)
    assert "Watchdog timeout" in system.journal(UNIT)
    wait_for(lambda: system.systemctl("is-active", UNIT, check=False).stdout.strip() == "active", "active again", 240)
    assert stream_once(system)["status"] == 200


def test_stop_drains_and_exits_0(system: BootedSystemd, tmp_path: Path) -> None:
    # The client marks its own response's start: the status counts requests from heartbeats (one a
    # second), where an earlier test's request can still show, and a stop then met ours at the door
    # (503, "the service is stopping") on a loaded host.
    started = tmp_path / "started"
    running = subprocess.Popen(client(system, "--once", "--started-file", str(started), "--text",
                                      "A longer sentence to stream. " * 20), stdout=subprocess.PIPE, text=True)
    wait_for(started.exists, "our request in flight", 60)
    wait_for(lambda: in_flight(ctl_status(system)) > 0, "the status to count it", 30)
    system.systemctl("stop", UNIT, timeout=120)
    outcome = json.loads(running.communicate(timeout=60)[0])
    # Finished, not cut off; on failure, the service's own account of the stop.
    assert outcome["status"] == 200 and outcome["bytes"] > 0, (outcome, system.journal(UNIT)[-4000:])
    assert system.systemctl("is-active", UNIT, check=False).stdout.strip() == "inactive"
    assert system.show(UNIT, "ExecMainStatus") == "0" and system.show(UNIT, "Result") == "success"
    assert "stopping" in system.journal(UNIT)
