"""The systemd source: `systemctl show` parsed, a host without systemd explained, the journal followed."""

from __future__ import annotations

import sys
import threading

import pytest

from a10tts_tui.sources.systemd import JournalTail, SystemdUnit, parse_show, systemd_unavailable

from tui_fakes import SHOW


def test_show_output_is_parsed():
    unit = parse_show("a10tts", SHOW)
    assert unit.available and (unit.active_state, unit.sub_state) == ("active", "running")
    assert unit.since == "Thu 2025-11-27 10:00:00 UTC"
    assert (unit.main_pid, unit.restarts, unit.memory_bytes) == (4242, 2, 3 * 2**30)
    assert unit.status_text == "profile balanced, 2.5 req/s, TTFA p50 121 ms"


def test_a_stopped_unit_has_no_pid_memory_or_timestamp():
    unit = parse_show("a10tts", "LoadState=loaded\nActiveState=inactive\nSubState=dead\n"
                                "ActiveEnterTimestamp=n/a\nMainPID=0\nNRestarts=0\n"
                                "MemoryCurrent=[not set]\nStatusText=\n")
    assert unit.available and unit.active_state == "inactive"
    assert (unit.main_pid, unit.memory_bytes, unit.since, unit.status_text) == (None, None, None, None)
    assert parse_show("a10tts", "MemoryCurrent=18446744073709551615\n").memory_bytes is None


def test_a_missing_unit_is_explained():
    unit = parse_show("a10tts", "LoadState=not-found\nActiveState=inactive\n")
    assert not unit.available and "not installed" in unit.message


def test_systemctl_is_asked_for_the_documented_properties():
    seen = []

    def runner(argv):
        seen.append(argv)
        return 0, SHOW, ""

    unit = SystemdUnit("a10tts@1", runner=runner, unavailable=lambda: None)
    assert unit.read().main_pid == 4242
    properties = ("LoadState,ActiveState,SubState,ActiveEnterTimestamp,MainPID,NRestarts,"
                  "MemoryCurrent,StatusText")
    assert seen == [["systemctl", "show", "a10tts@1", "-p", properties]]
    failing = SystemdUnit("a10tts", runner=lambda argv: (1, "", "Failed to connect to bus"),
                          unavailable=lambda: None)
    assert "Failed to connect to bus" in failing.read().message


def test_this_host_without_systemd_says_so():
    """No fakes: CI containers do not run systemd as init."""
    if systemd_unavailable() is None:
        pytest.skip("this host runs systemd; the system tests cover it")
    unit = SystemdUnit("a10tts").read()
    assert not unit.available and unit.message.startswith("systemd not available")


def test_journal_lines_stream_until_stopped():
    script = "import sys, time\nprint('first', flush=True)\nprint('second', flush=True)\ntime.sleep(60)"
    tail = JournalTail("a10tts", argv=[sys.executable, "-c", script])
    lines: list[str] = []
    done = threading.Event()

    def follow():
        for line in tail.follow():
            lines.append(line)
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    for _ in range(200):
        if len(lines) >= 2:
            break
        done.wait(0.05)
    assert lines[:2] == ["first", "second"]
    tail.stop()
    assert done.wait(5), "stop() must end the follower"
    assert lines == ["first", "second"]  # a requested stop is not reported as a failure


def test_journalctl_failing_says_why():
    tail = JournalTail("a10tts", argv=[sys.executable, "-c", "print('No journal files were found.')"])
    assert list(tail.follow()) == ["No journal files were found.", f"({sys.executable} exited with status 0)"]
    assert list(JournalTail("a10tts", argv=["/nonexistent/journalctl"]).follow())[0].startswith(
        "cannot run /nonexistent/journalctl")
