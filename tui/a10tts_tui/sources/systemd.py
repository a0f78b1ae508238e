"""The unit as systemd sees it (`systemctl show`) and its journal (`journalctl -f`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PROPERTIES = ("LoadState", "ActiveState", "SubState", "ActiveEnterTimestamp", "MainPID",
              "NRestarts", "MemoryCurrent", "StatusText")
_UNSET_MEMORY = 2**64 - 1  # systemd's "infinity" when memory accounting is off

# Runs a command and returns (exit status, stdout, stderr); replaced in unit tests.
Runner = Callable[[list[str]], tuple[int, str, str]]


@dataclass(frozen=True)
class UnitSnapshot:
    unit: str
    available: bool  # False: no systemd here, or the unit is not installed (see message)
    message: str = ""
    active_state: str | None = None
    sub_state: str | None = None
    since: str | None = None  # systemd's own timestamp text
    main_pid: int | None = None
    restarts: int | None = None
    memory_bytes: int | None = None
    status_text: str | None = None  # the service's last STATUS= line


def systemd_unavailable() -> str | None:
    """Why systemctl cannot work here, or None (sd_booted(): /run/systemd/system exists)."""
    if shutil.which("systemctl") is None:
        return "systemd not available: systemctl is not installed"
    if not os.path.isdir("/run/systemd/system"):
        return "systemd not available: this host was not booted with systemd"
    return None


def _run(argv: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    return done.returncode, done.stdout, done.stderr


class SystemdUnit:
    def __init__(self, unit: str, runner: Runner = _run,
                 unavailable: Callable[[], str | None] = systemd_unavailable):
        self.unit = unit
        self._run = runner
        self.unavailable_reason = unavailable

    def read(self) -> UnitSnapshot:
        reason = self.unavailable_reason()
        if reason:
            return UnitSnapshot(self.unit, False, reason)
        try:
            code, out, err = self._run(["systemctl", "show", self.unit, "-p", ",".join(PROPERTIES)])
        except (OSError, subprocess.TimeoutExpired) as exc:
            return UnitSnapshot(self.unit, False, f"systemctl failed: {exc}")
        if code != 0:
            why = err.strip() or f"exit status {code}"
            return UnitSnapshot(self.unit, False, f"systemctl show {self.unit}: {why}")
        return parse_show(self.unit, out)


def parse_show(unit: str, text: str) -> UnitSnapshot:
    values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    if values.get("LoadState") == "not-found":
        return UnitSnapshot(unit, False, f"unit {unit} is not installed (no {unit}.service)")
    memory = _int(values.get("MemoryCurrent"))
    return UnitSnapshot(
        unit,
        True,
        active_state=values.get("ActiveState") or None,
        sub_state=values.get("SubState") or None,
        since=_timestamp(values.get("ActiveEnterTimestamp")),
        main_pid=_int(values.get("MainPID")) or None,  # 0 means no main process
        restarts=_int(values.get("NRestarts")),
        memory_bytes=None if memory == _UNSET_MEMORY else memory,
        status_text=values.get("StatusText") or None,
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:  # "[not set]"
        return None


def _timestamp(text: str | None) -> str | None:
    return text if text and text != "n/a" else None


class JournalTail:
    """`journalctl -u UNIT -n 200 -f -o short-iso`, line by line, until stop()."""

    def __init__(self, unit: str, lines: int = 200, argv: list[str] | None = None):
        self.argv = argv or ["journalctl", "-u", unit, "-n", str(lines), "-f", "-o", "short-iso",
                             "--no-pager"]
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def follow(self) -> Iterator[str]:
        """Yields journal lines (and journalctl's own complaints) as they come; blocks in between."""
        with self._lock:
            if self._stopped:
                return
            try:
                self._process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, text=True, errors="replace")
            except OSError as exc:
                yield f"cannot run {self.argv[0]}: {exc}"
                return
        assert self._process.stdout is not None
        with self._process.stdout as output:
            for line in output:
                yield line.rstrip("\n")
        code = self._process.wait()
        if not self._stopped:
            yield f"({self.argv[0]} exited with status {code})"

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self._process.kill()
