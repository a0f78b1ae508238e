"""Small stand-ins for the outside world of the dashboard, for unit tests only.

Each speaks the real interface over a real channel where one exists (HTTP, a unix socket,
a child process), so the dashboard's own client code runs unchanged against it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pynvml

STATUS = {
    "version": "0.1.0", "state": "ready", "ready": True, "profile": "balanced", "since": None,
    "uptime_s": 812.4,
    "model": {"dir": "/var/lib/a10tts/models/demo", "demo": True, "device": "cpu",
              "precision": {"llm": "bfloat16", "flow": "float16", "hift": "float32"}},
    "server": {"host": "0.0.0.0", "port": 8080, "http_workers": 2},
    "requests": {"running": 3, "waiting": 1, "total": 1200, "failed": 4, "per_second": 2.5},
    "ttfa_s": {"p50": 0.121, "p95": 0.310, "window_s": 60, "recent": [0.11, 0.13]},
    "ttfa_phases_p50_s": {"encode": 0.004, "lm_first_token": 0.021, "first_chunk_tokens": 0.03,
                          "decode_inbox": 0.008, "decode_wait": 0.0, "vocode": 0.052, "deliver": 0.002},
    "rtf": {"p50": 0.21},
    "kv_cache": {"used_tokens": 5120, "capacity_tokens": 65536},
    "gpu": {"memory_allocated_bytes": 0, "memory_reserved_bytes": 0},
    "stages": [{"stage": "llm", "index": 0, "pid": 4242, "alive": True, "heartbeat_age_s": 0.4,
                "restarts": 0}],
}


# `systemctl show a10tts -p ...` of a running service.
SHOW = """LoadState=loaded
ActiveState=active
SubState=running
ActiveEnterTimestamp=Thu 2025-11-27 10:00:00 UTC
MainPID=4242
NRestarts=2
MemoryCurrent=3221225472
StatusText=profile balanced, 2.5 req/s, TTFA p50 121 ms
"""


# --- NVML ------------------------------------------------------------------------------------

def fake_nvml(gpus: list[dict[str, Any]] | None = None, init_error: int | None = None,
              unsupported: frozenset[str] = frozenset(),
              processes: dict[int, list[tuple[int, int | None]]] | None = None) -> types.SimpleNamespace:
    """A pynvml look-alike with the real constants and error classes. Functions named in
    `unsupported`, and values given as None, raise NVML_ERROR_NOT_SUPPORTED, as on cards
    without that counter."""
    gpus = gpus if gpus is not None else [GPU]
    nv = types.SimpleNamespace(**{k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith("NVML_")})
    nv.NVMLError = pynvml.NVMLError
    nv.calls = []

    def api(name: str, fn):
        def call(*args):
            nv.calls.append(name)
            result = None if name in unsupported else fn(*args)
            if result is None and name not in ("nvmlInit", "nvmlShutdown"):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return result
        setattr(nv, name, call)

    def init():
        if init_error is not None:
            raise pynvml.NVMLError(init_error)

    clocks = {pynvml.NVML_CLOCK_SM: "sm_clock", pynvml.NVML_CLOCK_MEM: "mem_clock"}
    pcie = {pynvml.NVML_PCIE_UTIL_TX_BYTES: "pcie_tx", pynvml.NVML_PCIE_UTIL_RX_BYTES: "pcie_rx"}
    ecc = {pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: "ecc_corrected",
           pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: "ecc_uncorrected"}
    api("nvmlInit", init)
    api("nvmlShutdown", lambda: None)
    api("nvmlDeviceGetCount", lambda: len(gpus))
    api("nvmlSystemGetDriverVersion", lambda: "550.54.15")
    api("nvmlDeviceGetHandleByIndex", lambda i: i)
    api("nvmlDeviceGetName", lambda h: gpus[h]["name"])
    api("nvmlDeviceGetUtilizationRates", lambda h: types.SimpleNamespace(gpu=gpus[h]["util"], memory=10))
    api("nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(
        used=gpus[h]["used"], total=gpus[h]["total"], free=gpus[h]["total"] - gpus[h]["used"]))
    api("nvmlDeviceGetTemperature", lambda h, sensor: gpus[h]["temp"])
    api("nvmlDeviceGetPowerUsage", lambda h: gpus[h]["power_mw"])
    api("nvmlDeviceGetEnforcedPowerLimit", lambda h: gpus[h]["limit_mw"])
    api("nvmlDeviceGetClockInfo", lambda h, kind: gpus[h][clocks[kind]])
    api("nvmlDeviceGetPcieThroughput", lambda h, counter: gpus[h][pcie[counter]])
    api("nvmlDeviceGetTotalEccErrors", lambda h, kind, counter: gpus[h][ecc[kind]])
    api("nvmlDeviceGetComputeRunningProcesses", lambda h: [
        types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in (processes or {}).get(h, [])])
    return nv


GPU = {"name": "NVIDIA A10", "util": 45, "used": 20 * 2**30, "total": 24 * 2**30, "temp": 61,
       "power_mw": 148_000, "limit_mw": 150_000, "sm_clock": 1695, "mem_clock": 6251,
       "pcie_tx": 12_000, "pcie_rx": 3_400, "ecc_corrected": 0, "ecc_uncorrected": 0}


# --- the HTTP API ----------------------------------------------------------------------------

class StatusServer:
    """Serves /readyz, /v1/status and a streaming /inference_zero_shot on a free loopback port."""

    def __init__(self, status: Any = None, ready: bool = True, first_audio_delay_s: float = 0.0):
        self.status = status if status is not None else STATUS
        self.ready = ready
        self.first_audio_delay_s = first_audio_delay_s
        self.probe_error: tuple[int, str] | None = None
        self.probes: list[dict[str, str]] = []
        self.hang = threading.Event()  # set: every request waits until it is cleared
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer._wait_while_hung()
                if self.path == "/readyz":
                    self._json(200 if outer.ready else 503, {"ready": outer.ready})
                elif self.path == "/v1/status":
                    self._json(200, outer.status)
                else:
                    self._json(404, {"message": "not found"})

            def do_POST(self):
                outer._wait_while_hung()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.probes.append({"content_type": self.headers["Content-Type"], "body": body})
                if outer.probe_error:
                    self._json(*outer.probe_error)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                time.sleep(outer.first_audio_delay_s)
                chunk = b"\x00\x01" * 2400
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))

            def _json(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _wait_while_hung(self) -> None:
        while self.hang.is_set():
            time.sleep(0.02)

    def __enter__(self) -> StatusServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hang.clear()
        self._server.shutdown()
        self._server.server_close()


# --- the admin socket ------------------------------------------------------------------------

@contextmanager
def admin_server(path: Path, answers: list[dict[str, Any]], delay_s: float = 0.0) -> Iterator[list[dict]]:
    """Answers every connection's command with `answers`, one JSON line each; yields the commands seen."""
    seen: list[dict] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with conn, conn.makefile("rwb") as stream:
                    seen.append(json.loads(stream.readline()))
                    for answer in answers:
                        time.sleep(delay_s)
                        stream.write(json.dumps(answer).encode() + b"\n")
                        stream.flush()
            except OSError:
                pass  # the client hung up early, as clients may

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)


# What the supervisor sends for a reload that restarts the workers (daemon/supervisor.py).
RELOAD_OK = [{"ok": True, "event": "validating"}, {"ok": True, "event": "draining", "in_flight": 2},
             {"ok": True, "event": "restarting", "profile": "low-latency"},
             {"ok": True, "event": "ready", "status": "ready, profile low-latency, 0.0 req/s"},
             {"ok": True, "restarted": True, "profile": "low-latency", "done": True}]
