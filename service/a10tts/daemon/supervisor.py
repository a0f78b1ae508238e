"""`a10tts serve`'s main process: systemd's view of the service.

Lifecycle: prepare (HTTP socket, IPC, admin socket) -> start the children -> every child sent
StageReady -> warm-up request through HTTP -> READY=1 -> serve (restart crashed children,
publish status, ping the watchdog) -> reload on request -> SIGTERM: STOPPING=1, drain, stop.

One asyncio loop on the main thread does everything, so a hung supervisor stops the
watchdog pings just like a hung child does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from prometheus_client import multiprocess

from ..config import ConfigError, LoadedConfig
from ..config.profiles import write_atomically
from ..pipeline.endpoints import Endpoints
from ..pipeline.memory_plan import gpu_baseline, start_waves
from ..pipeline.messages import Heartbeat, RequestDone, StageReady, StatusSnapshot, decode, encode
from ..pipeline.spec import StageSpec
from . import admin, warmup
from .admin import AdminServer, Progress
from .options import ModelMissing, ServeOptions, is_demo_model
from .pool import ENTRY_POINTS, Child, Pool, place_guests, stage_counts
from .restarts import RestartPolicy
from .runtime import bind_http, ipc_dir, reset_private_dir
from .sd_notify import Notifier
from .status import MAX_EXITS, RequestWindow, StageExit, build_document, status_line
from .watchdog import extending_start_timeout, ping_while_healthy

log = logging.getLogger(__name__)

# A ready child silent this long (or WatchdogSec, if longer) stops WATCHDOG=1. Main loops beat
# every second; a first call into a fresh kernel may take seconds on a busy host.
HEARTBEAT_STALE_MIN_S = 10.0
LOAD_TIMEOUT_S = 900.0  # a child still loading after this (e.g. a TensorRT build) counts as hung
DRAIN_TIMEOUT_S = 30.0  # in-flight requests get this long on reload and stop
STOP_TIMEOUT_S = 10.0  # a child that ignores SIGTERM this long is killed
PUBLISH_EVERY_S = 1.0


class StartupError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, options: ServeOptions, loaded: LoadedConfig, notifier: Notifier,
                 entry_points: Mapping[str, str] = ENTRY_POINTS):
        self.options = options
        self.loaded = loaded
        self.notifier = notifier
        self.pool = Pool(entry_points)
        self.window = RequestWindow()
        self.dirs = options.dirs
        self.ipc = Endpoints(ipc_dir(loaded))
        self.metrics_dir = self.dirs.runtime / "metrics"
        self.state = "loading"
        self.since = time.time()
        self.started = time.monotonic()
        self.exit_code = 0
        self.exits: deque[StageExit] = deque(maxlen=MAX_EXITS)
        self._exit_seq = 0
        self.restarts = RestartPolicy()
        self._pending_restarts: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._listener: socket.socket | None = None
        self._zmq = zmq.asyncio.Context()
        self._inbox = self._zmq.socket(zmq.PULL)
        self._publisher = self._zmq.socket(zmq.PUB)
        self._admin = AdminServer(self.dirs.admin_socket, self)
        self._token = ""
        self._hangups: set[asyncio.Task] = set()
        self._published: dict[str, Any] = {}  # set by publish(), first in _prepare()

    # -- the whole life ------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_sighup)
        try:
            self._prepare()
            await self._admin.start()
        except (OSError, StartupError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        background = [loop.create_task(coro) for coro in
                      (self._receive(), self._publish_periodically(), self._monitor(),
                       ping_while_healthy(self.notifier, self._stale_children))]
        startup = loop.create_task(self._start())
        try:
            await self._stop.wait()
            startup.cancel()
            await self._shutdown()
        finally:
            for task in background + [startup]:
                task.cancel()
            await asyncio.gather(*background, startup, return_exceptions=True)
            await self._admin.close()
            self._zmq.destroy(linger=0)
            if self._listener is not None:
                self._listener.close()
        return self.exit_code

    def _reload_on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(_log_progress))
        self._hangups.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._hangups.discard)

    def _prepare(self) -> None:
        if admin.in_use(self.dirs.admin_socket):
            raise StartupError(f"another a10tts serve is running with the runtime directory {self.dirs.runtime}")
        self.dirs.runtime.mkdir(parents=True, exist_ok=True)
        self.ipc.prepare()  # mode 0700; zmq replaces sockets a previous run left behind
        # Children's prometheus_client writes here (multiprocess mode); stale files would add up.
        reset_private_dir(self.metrics_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        self._token = warmup.write_token(self.dirs.runtime)
        self._listener = bind_http(self.loaded)
        self._inbox.bind(self.ipc.supervisor)
        self._publisher.bind(self.ipc.status)
        self.publish()

    async def _start(self) -> None:
        try:
            await self._start_children(self.loaded)
        except StartupError as exc:
            self._fail(1, f"start failed: {exc}")
            return
        self._set_state("ready")
        self.notifier.ready(self.status_line())
        log.info("ready: %s", self.status_line())

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        self._set_state("stopping")
        for handle in self._pending_restarts.values():
            handle.cancel()
        drained = await self._drain(DRAIN_TIMEOUT_S)
        log.info("stopping %d children%s", len(self.pool.children),
                 "" if drained else f" (requests still running after {DRAIN_TIMEOUT_S:.0f} s)")
        await self._stop_children(list(self.pool.children.values()), "service stopping")

    def _fail(self, code: int, reason: str) -> None:
        log.error("%s", reason)
        self.notifier.status(reason.encode("ascii", "replace").decode("ascii"))
        self.exit_code = code
        self._stop.set()

    # -- children ------------------------------------------------------------------------

    def _spec(self, loaded: LoadedConfig, stage: str, index: int) -> StageSpec:
        return StageSpec(
            stage=stage, index=index, config=loaded.config, model_dir=loaded.config.model.dir,
            state_dir=self.dirs.state, runtime_dir=self.dirs.runtime, ipc_dir=self.ipc.directory,
            counts=stage_counts(loaded.config), listen_socket=self._listener if stage == "api" else None,
        )

    async def _start_children(self, loaded: LoadedConfig) -> None:
        """Start every child, wait for all StageReady, then pass a warm-up request through HTTP.

        With ``llm.kv_cache_tokens = "auto"`` on a GPU the LM starts last, once the other stages
        hold their models and graphs, and sizes its cache from what they left (``memory_plan``).
        """
        if self._stop.is_set():
            raise StartupError("the service is stopping")
        counts = stage_counts(loaded.config)
        specs = [self._spec(loaded, stage, i) for stage, n in counts.items() for i in range(n)]
        waves = start_waves(place_guests(specs, loaded.config), gpu_baseline(loaded.config))
        async with extending_start_timeout(self.notifier):
            for number, wave in enumerate(waves):
                if number:
                    log.info("starting %s now that the others hold their GPU memory",
                             ", ".join(spec.name for spec in wave))
                self.pool.start_all(wave)
                await self._wait_all_ready()
            await self._warm_up()

    async def _wait_all_ready(self) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not (self.pool.all_ready() and not self._pending_restarts):
            if self._stop.is_set():
                raise StartupError("the service is stopping")
            if time.monotonic() > deadline:
                loading = [c.name for c in self.pool.children.values() if not c.ready]
                raise StartupError(f"children not ready after {LOAD_TIMEOUT_S:.0f} s: {', '.join(loading)}")
            await asyncio.sleep(0.1)

    async def _warm_up(self) -> None:
        """As many requests at once as the widest stage has workers, so that (the LM giving each new
        request the least busy decode worker) every worker's first, slowest call happens now."""
        counts = stage_counts(self.loaded.config)
        width = max(counts["api"], counts["encode"], counts["decode"])
        try:
            firsts = await warmup.warm_up(self.loaded.config.server.port, self._token, width)
        except warmup.WarmupError as exc:
            raise StartupError(str(exc)) from None
        log.info("warm-up synthesis passed: %d request(s), first audio after %s s", width,
                 ", ".join(f"{first:.3f}" for first in firsts))

    async def _stop_children(self, children: list[Child], reason: str) -> None:
        self.pool.signal_stop(children)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not self.pool.reap(children, force=time.monotonic() > deadline):
            await asyncio.sleep(0.05)
        for child in children:
            self._forget(child, reason)

    def _forget(self, child: Child, reason: str) -> None:
        """A child is gone: tell HTTP workers (its requests are lost) and clean its metrics."""
        self._exit_seq += 1
        self.exits.append(StageExit(self._exit_seq, child.spec.stage, child.spec.index, child.pid,
                                    time.time(), reason))
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(child.pid, str(self.metrics_dir))
        self.publish()

    def _on_crash(self, child: Child) -> None:
        reason = child.exit_reason()
        self.pool.reap([child], force=False)
        self._forget(child, reason)
        if child.host is not None:
            log.error("%s died with its host process (pid %s): %s", child.name, child.pid, reason)
            return  # it restarts with its host
        log.error("%s (pid %s) died: %s", child.name, child.pid, reason)
        delay = self.restarts.crashed(child.key)
        if delay is None:
            self._fail(1, f"{child.name} died {self.restarts.recent(child.key)} times in "
                          f"{self.restarts.window_s:.0f} s (last: {reason}); giving up so systemd restarts the service")
            return
        # Logged when it happens: a child that died of the signal that is stopping the service
        # (Ctrl-C reaches the whole process group) is not restarted.
        self._pending_restarts[child.key] = asyncio.get_running_loop().call_later(
            delay, self._restart, child.spec, child.restarts + 1)

    def _restart(self, spec: StageSpec, restarts: int) -> None:
        del self._pending_restarts[(spec.stage, spec.index)]
        if not self._stop.is_set():
            log.info("restarting %s (restart %d)", spec.name, restarts)
            self.pool.start(spec, restarts=restarts)
            self.publish()

    async def _monitor(self) -> None:
        while True:
            for child in self.pool.crashed():
                self._on_crash(child)
            if self.ready != self._published.get("ready"):  # e.g. a restarted child has settled
                self.publish()
            await asyncio.sleep(0.1)

    # -- messages in and out -----------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            data = await self._inbox.recv()
            try:
                message = decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("ignoring an unreadable message on %s: %s", self.ipc.supervisor, exc)
                continue
            if isinstance(message, Heartbeat):
                self.pool.on_heartbeat(message)
            elif isinstance(message, StageReady):
                if self.pool.on_ready(message) is not None:
                    self.publish()
            elif isinstance(message, RequestDone):
                self.window.add(message)

    async def _publish_periodically(self) -> None:
        last_line = ""
        while True:
            self.publish()
            line = self.status_line()
            if line != last_line and not self._stop.is_set():
                self.notifier.status(line)
                last_line = line
            await asyncio.sleep(PUBLISH_EVERY_S)

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.pool.all_ready() and not self._pending_restarts

    def status(self) -> dict[str, Any]:
        """The document the HTTP workers have last been sent (admin answers agree with /readyz)."""
        return self._published

    def _document(self) -> dict[str, Any]:
        config = self.loaded.config
        # A crashed child being restarted makes a "ready" service look like it is loading.
        state = "loading" if self.state == "ready" and not self.ready else self.state
        return build_document(
            state=state, ready=self.ready, config=config, profile=self.loaded.profile,
            demo=is_demo_model(config.model.dir),
            device=self.pool.info("llm", "device") or config.model.device,
            since=self.since, uptime_s=time.monotonic() - self.started, window=self.window,
            loads=self.pool.loads(), stages=self.pool.describe(), exits=self.exits,
        )

    def status_line(self) -> str:
        return status_line(self._document())

    def publish(self) -> None:
        document = self._document()
        snapshot = StatusSnapshot(ready=document["ready"], state=document["state"], status=document)
        with contextlib.suppress(zmq.Again):
            self._publisher.send(encode(snapshot), zmq.NOBLOCK)
        self._published = document

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("state %s -> %s", self.state, state)
            self.state, self.since = state, time.time()
        self.publish()

    def _stale_children(self) -> list[str]:
        watchdog_s = (self.notifier.watchdog_usec or 0) / 1e6
        return self.pool.stale(max(HEARTBEAT_STALE_MIN_S, watchdog_s), LOAD_TIMEOUT_S)

    # -- admin actions (admin.AdminActions) ------------------------------------------------------

    def in_flight(self) -> int:
        return int(sum(load.get("running", 0) + load.get("waiting", 0) for load in self.pool.loads()["api"]))

    async def _drain(self, timeout_s: float) -> bool:
        """Wait until every serving HTTP worker reports, after now, no request in the pipeline."""
        since = time.monotonic()
        deadline = since + timeout_s
        while time.monotonic() < deadline:
            serving = [c for c in self.pool.by_stage(["api"]) if c.alive and c.ready]
            reported = all(c.last_heartbeat is not None and c.last_heartbeat > since for c in serving)
            if reported and self.in_flight() == 0:
                return True
            await asyncio.sleep(0.1)
        return False

    async def drain(self) -> dict[str, Any]:
        self._set_state("draining")
        drained = await self._drain(self.loaded.config.limits.request_timeout_seconds)
        return {"ok": True, "drained": drained, "in_flight": self.in_flight()}

    async def reload(self, progress: Progress, profile: str | None = None) -> dict[str, Any]:
        async with self._reload_lock:
            if self._stop.is_set() or self.state in ("loading", "stopping"):
                return {"ok": False, "error": f"cannot reload while {self.state}; try again when ready"}
            await progress({"ok": True, "event": "validating"})
            try:
                new = self.options.load(profile)
            except (ConfigError, ModelMissing) as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                return {"ok": False, "error": str(exc)}
            if profile is not None:
                write_atomically(self.dirs.active_profile_file, profile + "\n")
            if new.config == self.loaded.config:
                self.loaded = new  # at most the profile's name changed
                self._set_state("ready")
                self.notifier.ready(self.status_line())
                return {"ok": True, "restarted": False, "profile": new.profile}
            return await self._reload_children(new, progress)

    async def _reload_children(self, new: LoadedConfig, progress: Progress) -> dict[str, Any]:
        old, old_listener = self.loaded, self._listener
        listener = old_listener
        if (new.config.server.host, new.config.server.port) != (old.config.server.host, old.config.server.port):
            try:
                listener = bind_http(new)
            except OSError as exc:
                return {"ok": False, "error": f"cannot listen on {new.config.server.host}:"
                                              f"{new.config.server.port}: {exc}; the running configuration stays"}
        self.notifier.reloading()
        self._set_state("reloading")
        await progress({"ok": True, "event": "draining", "in_flight": self.in_flight()})
        await self._drain(DRAIN_TIMEOUT_S)
        await progress({"ok": True, "event": "restarting", "profile": new.profile})
        error = None
        try:
            await self._replace_children(new, listener)
        except StartupError as exc:
            if self._stop.is_set():
                return {"ok": False, "error": "the service is stopping"}
            error = f"the new configuration did not start ({exc}); restarted the previous one"
            log.error("reload failed: %s", error)
            await progress({"ok": True, "event": "rolling back"})
            try:
                await self._replace_children(old, old_listener)
            except StartupError as again:
                self._fail(1, f"reload failed and the previous configuration did not start again: {again}")
                return {"ok": False, "error": str(again)}
        for unused in {listener, old_listener} - {self._listener}:
            unused.close()
        self._set_state("ready")
        self.notifier.ready(self.status_line())
        await progress({"ok": True, "event": "ready", "status": self.status_line()})
        if error:
            return {"ok": False, "error": error}
        log.info("reloaded: %s", self.status_line())
        return {"ok": True, "restarted": True, "profile": new.profile}

    async def _replace_children(self, new: LoadedConfig, listener: socket.socket) -> None:
        """Stop every child and start them on `new`; the HTTP listener stays bound throughout."""
        for handle in self._pending_restarts.values():
            handle.cancel()
        self._pending_restarts.clear()
        await self._stop_children(list(self.pool.children.values()), "stopped for a reload")
        self.loaded, self._listener = new, listener
        await self._start_children(new)


async def _log_progress(message: dict[str, Any]) -> None:
    log.info("reload: %s", message.get("event"))

