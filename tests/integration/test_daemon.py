"""`a10tts serve --demo` as a plain process (no systemd), with the real workers on the CPU.

The test binds the NOTIFY_SOCKET (abstract namespace) and reads what the supervisor tells
systemd; it drives the admin socket with `a10tts ctl` / `a10tts profile use`, talks HTTP on
loopback, and kills each stage once. One service is shared by the module; tests run in order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from a10tts.admin_client import AdminClient
from a10tts.daemon.warmup import prompt_wav
from a10tts.pipeline.first_audio import PHASES

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240


def a10tts(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a10tts.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifyListener:
    """The systemd side of sd_notify: records every datagram as a dict, in order."""

    def __init__(self) -> None:
        self.address = f"@a10tts-test-{uuid.uuid4().hex[:12]}"
        self.messages: list[dict[str, str]] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + self.address[1:])
        self._socket.settimeout(0.2)
        self._closed = False
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while not self._closed:
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait_for(self, key: str, after: int = 0, timeout: float = 30) -> int:
        """Index of the first message at or after `after` that sets `key`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.messages[after:], after):
                if key in message:
                    return i
            time.sleep(0.05)
        raise AssertionError(f"no {key}= from the service in {timeout} s; got {self.messages[after:][-5:]}")

    def close(self) -> None:
        self._closed = True
        self._socket.close()


@dataclass
class Service:
    process: subprocess.Popen
    port: int
    config_dir: Path
    state_dir: Path
    runtime_dir: Path
    log: Path
    notify: NotifyListener
    prompt: bytes = field(default_factory=prompt_wav)

    @property
    def dir_args(self) -> list[str]:
        return ["--config-dir", str(self.config_dir), "--state-dir", str(self.state_dir),
                "--runtime-dir", str(self.runtime_dir)]

    def status(self) -> dict:
        return next(AdminClient(self.runtime_dir / "admin.sock", timeout_s=10).request({"cmd": "status"}))["status"]

    def stream(self, text: str = "Hello from the test.", timeout: float = 60,
               started: threading.Event | None = None) -> tuple[int, bytes]:
        """One streamed synthesis: its status and body; ``started`` is set once the response has begun."""
        files = {"prompt_wav": ("prompt.wav", self.prompt, "audio/wav")}
        data = {"tts_text": text, "prompt_text": "a prompt", "stream": "true"}
        with httpx.stream("POST", f"http://127.0.0.1:{self.port}/inference_zero_shot", files=files, data=data,
                          timeout=timeout) as response:
            if started is not None:
                started.set()
            return response.status_code, response.read()

    def wait_until(self, predicate, what: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s; last status: {json.dumps(status)[:2000]}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("daemon")
    config_dir = root / "etc"
    subprocess.run(["cp", "-r", str(REPO / "etc" / "a10tts"), str(config_dir)], check=True)
    notify = NotifyListener()
    port = free_port()
    log = root / "serve.log"
    # Two decode workers over every profile (the environment layer), so requests are routed between them:
    # the first in the LM's process (a guest thread), the second in its own.
    env = dict(os.environ, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="2000000", A10TTS_DECODE__PROCESSES="2",
               A10TTS_DECODE__IN_LLM_PROCESS="true")
    args = ["--config-dir", str(config_dir), "--state-dir", str(root / "state"), "--runtime-dir", str(root / "run")]
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "a10tts.cli", "serve", "--demo", "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    svc = Service(process, port, config_dir, root / "state", root / "run", log, notify)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any("READY" in m for m in notify.messages):
            assert process.poll() is None, f"serve exited with {process.returncode}:\n{svc.log_tail()}"
            assert time.monotonic() < deadline, f"not READY within {START_TIMEOUT_S} s:\n{svc.log_tail()}"
            time.sleep(0.1)
        yield svc
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        notify.close()


# -- before any service: the two ways `serve` refuses to start -------------------------------------


def test_serve_without_model_fails_with_instructions(tmp_path: Path, config_dir: Path) -> None:
    result = a10tts("serve", "--config-dir", str(config_dir), "--state-dir", str(tmp_path / "state"),
                    "--runtime-dir", str(tmp_path / "run"), "--set", f'model.dir="{tmp_path}/nothing-here"')
    assert result.returncode == 78, result.stderr
    assert f"no model directory at {tmp_path}/nothing-here" in result.stderr
    assert "huggingface-cli download FunAudioLLM/CosyVoice2-0.5B" in result.stderr
    assert "a10tts serve --demo" in result.stderr
    assert not (tmp_path / "run" / "admin.sock").exists()


def test_serve_with_invalid_config_lists_every_problem(tmp_path: Path, config_dir: Path) -> None:
    (config_dir / "conf.d").mkdir()
    (config_dir / "conf.d" / "10-site.toml").write_text("[server]\nprot = 1\nhttp_workers = 0\n")
    result = a10tts("serve", "--demo", "--config-dir", str(config_dir), "--state-dir", str(tmp_path / "state"),
                    "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "invalid configuration (2 problems)" in result.stderr
    assert "server.prot: unknown key" in result.stderr and "server.http_workers: invalid value" in result.stderr


# -- one service, started once ----------------------------------------------------------------------


def test_ready_comes_after_loading_and_warm_up(service: Service) -> None:
    messages = service.notify.messages
    ready = service.notify.wait_for("READY")
    assert any("EXTEND_TIMEOUT_USEC" in m for m in messages[:ready]), messages[:ready]
    assert messages[ready]["READY"] == "1"
    assert messages[ready]["STATUS"].startswith("ready, profile balanced"), messages[ready]
    assert "warm-up synthesis passed" in service.log_tail()
    # READY=1 means ready: the very first probe afterwards succeeds.
    assert httpx.get(f"http://127.0.0.1:{service.port}/readyz").status_code == 200


def test_watchdog_pings_while_children_are_healthy(service: Service) -> None:
    first = service.notify.wait_for("WATCHDOG", after=service.notify.wait_for("READY"))
    second = service.notify.wait_for("WATCHDOG", after=first + 1, timeout=5)
    assert service.notify.messages[second]["WATCHDOG"] == "1"


def test_streaming_request_returns_audio(service: Service) -> None:
    status, audio = service.stream()
    assert status == 200, audio[:500]
    assert len(audio) > 2400 and len(audio) % 2 == 0  # int16 PCM, more than 50 ms


def test_ctl_status_shows_every_child(service: Service) -> None:
    result = a10tts("ctl", "--runtime-dir", str(service.runtime_dir), "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "ready" and status["ready"] and status["profile"] == "balanced"
    assert sorted(f"{s['stage']}-{s['index']}" for s in status["stages"]) == \
        ["api-0", "api-1", "decode-0", "decode-1", "encode-0", "llm-0"]
    assert all(s["alive"] and s["ready"] for s in status["stages"])
    pids = {f"{s['stage']}-{s['index']}": s["pid"] for s in status["stages"]}
    # decode.in_llm_process: the first decode worker is a thread of the LM's process.
    assert pids["decode-0"] == pids["llm-0"] and len({pids["llm-0"], pids["decode-1"], pids["encode-0"]}) == 3
    assert status["model"]["demo"] and status["model"]["device"] == "cpu"
    assert status["requests"]["total"] >= 1 and status["ttfa_s"]["p50"] > 0
    assert set(status["ttfa_phases_p50_s"]) == set(PHASES)  # stamped by every stage of the real pipeline
    text = a10tts("ctl", "--runtime-dir", str(service.runtime_dir), "status").stdout
    assert "ready" in text and "profile balanced" in text and "llm-0" in text and "by phase  encode" in text
    assert httpx.get(f"http://127.0.0.1:{service.port}/v1/status").json()["profile"] == "balanced"


def test_children_do_not_see_the_notify_socket(service: Service) -> None:
    for stage in service.status()["stages"]:
        environ = Path(f"/proc/{stage['pid']}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_USEC=")) for v in environ), stage
        assert f"PROMETHEUS_MULTIPROC_DIR={service.runtime_dir / 'metrics'}".encode() in environ


def test_a_second_serve_refuses_a_taken_runtime_dir_or_port(service: Service, tmp_path: Path) -> None:
    same_runtime = a10tts("serve", "--demo", "--port", str(free_port()), *service.dir_args)
    assert same_runtime.returncode == 1
    assert f"another a10tts serve is running with the runtime directory {service.runtime_dir}" in same_runtime.stderr
    same_port = a10tts("serve", "--demo", "--port", str(service.port), "--config-dir", str(service.config_dir),
                       "--state-dir", str(service.state_dir), "--runtime-dir", str(tmp_path / "run"))
    assert same_port.returncode == 1
    assert f"cannot listen on 0.0.0.0:{service.port}" in same_port.stderr
    assert service.status()["ready"]


def test_invalid_reload_is_refused_and_the_old_config_keeps_serving(service: Service) -> None:
    pids = {s["pid"] for s in service.status()["stages"]}
    bad = service.config_dir / "conf.d" / "50-typo.toml"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text("[server]\nprot = 9000\n")
    try:
        result = a10tts("ctl", "--runtime-dir", str(service.runtime_dir), "reload", "--wait")
    finally:
        bad.unlink()
    assert result.returncode == 1
    assert "reload refused" in result.stderr and "50-typo.toml:2: server.prot: unknown key" in result.stderr
    assert "reload refused" in service.log_tail()
    status = service.status()
    assert status["state"] == "ready" and {s["pid"] for s in status["stages"]} == pids
    assert service.stream()[0] == 200


def test_profile_use_reloads_with_new_worker_counts(service: Service) -> None:
    mark = len(service.notify.messages)
    result = a10tts("profile", "use", "low-latency", *service.dir_args, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restarting the workers" in result.stdout and "the service runs profile 'low-latency'" in result.stdout
    reloading = service.notify.wait_for("RELOADING", after=mark)
    assert int(service.notify.messages[reloading]["MONOTONIC_USEC"]) > 0
    assert service.notify.wait_for("READY", after=reloading) > reloading
    status = service.status()
    assert status["profile"] == "low-latency" and status["server"]["http_workers"] == 1
    assert sorted(f"{s['stage']}-{s['index']}" for s in status["stages"]) == \
        ["api-0", "decode-0", "decode-1", "encode-0", "llm-0"]  # the environment's decode processes stay
    assert service.stream()[0] == 200


@pytest.mark.parametrize(("stage", "frames"), [("llm", ("llm_worker.py", "decode_worker.py")), ("api", ("api/worker.py",))])
def test_sigusr1_writes_a_process_stacks_to_the_log_and_harms_nothing(service: Service, stage: str,
                                                                      frames: tuple[str, ...]) -> None:
    child = next(s for s in service.status()["stages"] if s["stage"] == stage)
    logged = len(service.log.read_bytes())
    os.kill(child["pid"], signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(f in service.log.read_bytes()[logged:].decode(errors="replace")
                                                   for f in frames):
        time.sleep(0.1)
    dump = service.log.read_bytes()[logged:].decode(errors="replace")
    assert "most recent call first" in dump and all(f in dump for f in frames), dump[-3000:]  # llm: both threads
    status = service.status()
    assert status["ready"] and next(s for s in status["stages"] if s["stage"] == stage)["pid"] == child["pid"]
    assert service.stream()[0] == 200


@pytest.mark.parametrize("stage", ["api", "encode", "llm", "decode"])
def test_a_killed_stage_is_restarted(service: Service, stage: str) -> None:
    before = next(s for s in service.status()["stages"] if s["stage"] == stage)
    os.kill(before["pid"], signal.SIGKILL)

    def restarted(status: dict) -> bool:
        now = next((s for s in status["stages"] if s["stage"] == stage), None)
        return status["ready"] and now is not None and now["pid"] != before["pid"] and now["ready"]

    status = service.wait_until(restarted, f"{stage} restarted")
    after = next(s for s in status["stages"] if s["stage"] == stage)
    assert after["restarts"] == before["restarts"] + 1
    assert any(f["pid"] == before["pid"] and f["reason"] == "killed by SIGKILL" for f in status["stage_failures"])
    code, body = service.stream()
    assert code == 200, body[:500]


def test_requests_in_a_killed_stage_fail_fast(service: Service) -> None:
    outcome: dict = {}
    started = threading.Event()

    def long_request() -> None:
        try:
            outcome["result"] = service.stream("This sentence is long. " * 60, timeout=120, started=started)
        except httpx.HTTPError as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    # Our own response's start, not the status's count: that comes from heartbeats (one a second),
    # where an earlier test's request can still show, so a kill could come before ours arrived.
    thread = threading.Thread(target=long_request)
    thread.start()
    assert started.wait(30), "the long request did not start"
    service.wait_until(lambda s: (s["requests"]["running"] or 0) + (s["requests"]["waiting"] or 0) > 0,
                       "the status to count the long request", timeout=30)
    llm = next(s for s in service.status()["stages"] if s["stage"] == "llm")
    os.kill(llm["pid"], signal.SIGKILL)
    killed = time.monotonic()
    thread.join(60)
    assert not thread.is_alive(), "the request in the killed stage is still waiting"
    assert outcome["ended"] - killed < 10
    # It failed: an error status, or a stream cut short (no clean end).
    assert "error" in outcome or outcome["result"][0] == 503, outcome
    service.wait_until(lambda s: s["ready"], "ready again")


def test_drain_refuses_new_requests_until_a_reload(service: Service) -> None:
    result = a10tts("ctl", "--runtime-dir", str(service.runtime_dir), "drain")
    assert result.returncode == 0 and "drained" in result.stdout, result.stderr
    assert service.status()["state"] == "draining"
    refused = httpx.get(f"http://127.0.0.1:{service.port}/readyz")
    assert refused.status_code == 503 and refused.headers.get("retry-after")
    assert service.stream()[0] == 503
    result = a10tts("ctl", "--runtime-dir", str(service.runtime_dir), "reload")
    assert result.returncode == 0, result.stderr
    service.wait_until(lambda s: s["ready"], "ready after the reload", timeout=10)


def test_sighup_reloads(service: Service) -> None:
    pids = {s["pid"] for s in service.status()["stages"]}
    service.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload: validating" not in service.log_tail():
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.1)
    status = service.wait_until(lambda s: s["ready"], "ready after SIGHUP", timeout=10)
    assert {s["pid"] for s in status["stages"]} == pids  # nothing changed, nothing restarted


def test_sigterm_stops_gracefully_with_exit_0(service: Service) -> None:
    mark = len(service.notify.messages)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) == 0, service.log_tail()
    service.notify.wait_for("STOPPING", after=mark, timeout=1)
    assert not (service.runtime_dir / "admin.sock").exists()
