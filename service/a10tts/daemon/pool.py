"""The child processes of `a10tts serve`: start (spawn), track (ready, heartbeats), stop.

Every child is a `multiprocessing` spawn process running one entry point of the contract with
its `StageSpec`, or a guest: a stage on a thread of another child's process (its host), which
starts, dies and restarts with it. The pool only knows processes; when to restart or give up is
the supervisor's decision.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from typing import Any

from ..config import Config
from ..pipeline.messages import Heartbeat, StageReady
from ..pipeline.spec import STAGES, StageSpec

log = logging.getLogger(__name__)

ENTRY_POINTS: Mapping[str, str] = {
    "api": "a10tts.api.worker:main",
    "encode": "a10tts.pipeline.encode_worker:main",
    "llm": "a10tts.pipeline.llm_worker:main",
    "decode": "a10tts.pipeline.decode_worker:main",
}
# Stages first, HTTP workers last: a worker that accepts requests finds the pipeline loading.
START_ORDER = ("llm", "decode", "encode", "api")
_PR_SET_PDEATHSIG = 1
RECONNECT_GRACE_S = 1.0


def stage_counts(config: Config) -> dict[str, int]:
    return {"api": config.server.http_workers, "encode": config.encode.processes,
            "llm": 1, "decode": config.decode.processes}


def place_guests(specs: list[StageSpec], config: Config) -> list[StageSpec]:
    """The processes to start: with ``decode.in_llm_process`` the first decode worker is the LM
    process's guest, not a process of its own (the GPU time-slices processes)."""
    if not config.decode.in_llm_process:
        return specs
    first_decode = ("decode", 0)
    guests = tuple(s for s in specs if (s.stage, s.index) == first_decode)
    return [replace(s, guests=guests) if s.stage == "llm" else s for s in specs if (s.stage, s.index) != first_decode]


def _run_child(entry_point: str, spec: StageSpec) -> None:
    """Runs in the child: die with the supervisor, then call the stage's `main(spec)`."""
    # Outside systemd nothing else would stop an orphaned GPU worker.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != multiprocessing.parent_process().pid:
        return  # the supervisor died before prctl took effect
    module, _, function = entry_point.partition(":")
    getattr(importlib.import_module(module), function)(spec)


@dataclass
class Child:
    spec: StageSpec
    process: BaseProcess
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    last_heartbeat: float | None = None
    load: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    stopping: bool = False  # a stop we asked for is not a crash
    host: tuple[str, int] | None = None  # a guest: the child whose process it runs in

    @property
    def key(self) -> tuple[str, int]:
        return self.spec.stage, self.spec.index

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.exitcode is None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None

    def settled(self, now: float) -> bool:
        """Ready, and, when it replaced a crashed process, its peers have had time to reconnect
        (zmq retries a lost connection every 100 ms); until then HTTP workers cannot reach it."""
        return self.ready and (self.restarts == 0 or now - self.ready_at >= RECONNECT_GRACE_S)

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat is None else now - self.last_heartbeat

    def exit_reason(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def describe(self, now: float) -> dict[str, Any]:
        age = self.heartbeat_age(now)
        return {"stage": self.spec.stage, "index": self.spec.index, "pid": self.pid, "alive": self.alive,
                "ready": self.ready, "heartbeat_age_s": None if age is None else round(age, 2),
                "restarts": self.restarts}


class Pool:
    """The current children, keyed by (stage, index)."""

    def __init__(self, entry_points: Mapping[str, str] = ENTRY_POINTS):
        self.entry_points = entry_points
        self.children: dict[tuple[str, int], Child] = {}
        self._context = multiprocessing.get_context("spawn")

    # -- starting and stopping ---------------------------------------------------------

    def start(self, spec: StageSpec, restarts: int = 0) -> Child:
        """Start one child. Call from the main thread: PDEATHSIG follows the starting thread."""
        process = self._context.Process(target=_run_child, args=(self.entry_points[spec.stage], spec),
                                         name=f"a10tts-{spec.name}")
        process.start()
        child = Child(spec, process, restarts=restarts)
        self.children[child.key] = child
        for guest in spec.guests:
            self.children[(guest.stage, guest.index)] = Child(guest, process, restarts=restarts, host=child.key)
        hosting = f", hosting {', '.join(guest.name for guest in spec.guests)}" if spec.guests else ""
        log.info("started %s (pid %s%s)", spec.name, process.pid, hosting)
        return child

    def start_all(self, specs: Iterable[StageSpec]) -> None:
        for spec in sorted(specs, key=lambda s: (START_ORDER.index(s.stage), s.index)):
            self.start(spec)

    def signal_stop(self, children: Iterable[Child]) -> list[Child]:
        """SIGTERM each child (HTTP workers finish their responses, stages exit their loops)."""
        children = list(children)
        for child in children:
            child.stopping = True
            if child.alive:
                child.process.terminate()
        return children

    def reap(self, children: Iterable[Child], force: bool) -> bool:
        """Forget children that exited; SIGKILL the rest when `force`. True when all are gone."""
        gone = True
        for child in children:
            if child.alive and force:
                log.warning("%s (pid %s) did not exit in time; killing it", child.name, child.pid)
                child.process.kill()
                child.process.join(2)
            if child.alive:
                gone = False
                continue
            child.process.join(0)  # the Process object's finalizer closes its pipe once dropped
            if self.children.get(child.key) is child:
                del self.children[child.key]
        return gone

    def by_stage(self, stages: Iterable[str]) -> list[Child]:
        wanted = set(stages)
        return [c for c in self.children.values() if c.spec.stage in wanted]

    # -- messages from children ----------------------------------------------------------

    def _current(self, stage: str, index: int, pid: int) -> Child | None:
        # Messages from an earlier process of the same slot are stale.
        child = self.children.get((stage, index))
        return child if child is not None and child.pid == pid else None

    def on_heartbeat(self, beat: Heartbeat) -> None:
        child = self._current(beat.stage, beat.index, beat.pid)
        if child is not None:
            child.last_heartbeat = time.monotonic()
            child.load = dict(beat.load)

    def on_ready(self, ready: StageReady) -> Child | None:
        child = self._current(ready.stage, ready.index, ready.pid)
        if child is not None and not child.ready:
            child.ready_at = child.last_heartbeat = time.monotonic()
            child.info = dict(ready.info)
            log.info("%s ready (pid %s) after %.1f s", child.name, child.pid, child.ready_at - child.started_at)
        return child

    # -- health ---------------------------------------------------------------------------

    def crashed(self) -> list[Child]:
        return [c for c in self.children.values() if not c.alive and not c.stopping]

    def all_ready(self) -> bool:
        now = time.monotonic()
        return bool(self.children) and all(c.alive and c.settled(now) for c in self.children.values())

    def stale(self, stale_after_s: float, load_timeout_s: float) -> list[str]:
        """Children that look hung: dead, silent while ready, or loading for too long."""
        now = time.monotonic()
        found = []
        for child in self.children.values():
            if child.stopping:
                continue
            if not child.alive:
                found.append(f"{child.name} (exited)")
            elif child.ready and child.heartbeat_age(now) > stale_after_s:
                found.append(f"{child.name} (pid {child.pid}, silent {child.heartbeat_age(now):.1f} s)")
            elif not child.ready and now - child.started_at > load_timeout_s:
                found.append(f"{child.name} (pid {child.pid}, loading {now - child.started_at:.0f} s)")
        return found

    def loads(self) -> dict[str, list[dict[str, float]]]:
        loads: dict[str, list[dict[str, float]]] = {stage: [] for stage in STAGES}
        for child in self.children.values():
            if child.alive and child.load:
                loads[child.spec.stage].append(child.load)
        return loads

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [c.describe(now) for c in sorted(self.children.values(),
                                                 key=lambda c: (STAGES.index(c.spec.stage), c.spec.index))]

    def info(self, stage: str, key: str) -> Any:
        """A value a stage reported in its StageReady (e.g. the LM's resolved device)."""
        for child in self.by_stage([stage]):
            if key in child.info:
                return child.info[key]
        return None

