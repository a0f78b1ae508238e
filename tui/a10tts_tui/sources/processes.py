"""Which processes belong to the a10tts service: its main PID and everything it started."""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil


def service_pids(roots: Iterable[int | None]) -> set[int]:
    """The given root PIDs (systemd's MainPID, the port's listeners) and all their descendants."""
    pids: set[int] = set()
    for pid in roots:
        if not pid or pid in pids:
            continue
        try:
            root = psutil.Process(pid)
            pids.add(pid)
            pids.update(child.pid for child in root.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def process_name(pid: int) -> str | None:
    """A recognisable name: `a10tts serve`, or `a10tts serve child` for the processes it spawned
    (whose command line is Python's multiprocessing bootstrap), else the executable's name."""
    try:
        process = psutil.Process(pid)
        lineage = [process, *process.parents()[:2]]
        for depth, ancestor in enumerate(lineage):
            command = _a10tts_command(ancestor.cmdline())
            if command:
                return command + (" child" if depth else "")
        return process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _a10tts_command(cmdline: list[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if os.path.basename(arg) == "a10tts" or arg == "a10tts.cli":
            return " ".join(["a10tts", *cmdline[i + 1:i + 2]])
    return None
