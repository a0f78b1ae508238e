"""The HTTP API against the real pipeline: encode, LM, decode and one HTTP worker as real
processes on the tiny demo model, real HTTP and WebSocket on loopback.

The test stands in for the supervisor only: it binds the HTTP listening socket, binds the
`supervisor` (PULL) and `status` (PUB) endpoints, publishes a ready StatusSnapshot once every
process sent StageReady, and records what the HTTP worker reports (RequestDone).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
import soundfile
import websockets
import zmq
from prometheus_client.parser import text_string_to_metric_families

from a10tts import cli
from a10tts.api import worker as api_worker
from a10tts.bench.phases import read_totals, server_timing_ms
from a10tts.config import Config
from a10tts.config.schema import DecodeConfig, LimitsConfig, ModelConfig, ServerConfig
from a10tts.engine.demo import init_demo
from a10tts.pipeline import decode_worker, encode_worker, llm_worker
from a10tts.pipeline.endpoints import Endpoints
from a10tts.pipeline.first_audio import PHASES
from a10tts.pipeline.messages import RequestDone, StageReady, StatusSnapshot, decode, encode
from a10tts.pipeline.spec import StageSpec

pytestmark = pytest.mark.slow

ENTRY_POINTS = {
    "encode": encode_worker.main,
    "llm": llm_worker.main,
    "decode": decode_worker.main,
    "api": api_worker.main,
}
COUNTS = {stage: 1 for stage in ENTRY_POINTS}
MAX_UPLOAD = 1 << 20
MAX_TEXT = 400
CONCURRENT_CLIENTS = 16


def prompt_wav(seconds: float = 2.0, rate: int = 16000, *, nan: bool = False) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 150 * t + 3 * np.sin(2 * np.pi * 5 * t))
    if nan:  # a valid header over unusable samples: only decoding finds out
        wave[100] = np.nan
    out = io.BytesIO()
    soundfile.write(out, wave.astype(np.float32), rate, format="WAV", subtype="FLOAT" if nan else "PCM_16")
    return out.getvalue()


PROMPT = prompt_wav()


@dataclass
class SupervisorStandIn:
    """Binds the supervisor's sockets; publishes readiness once every process is ready."""

    endpoints: Endpoints
    context: zmq.Context = field(default_factory=zmq.Context)
    ready: set[str] = field(default_factory=set)
    done: list[RequestDone] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inbox = self.context.socket(zmq.PULL)
        self.inbox.bind(self.endpoints.supervisor)
        self.publisher = self.context.socket(zmq.PUB)
        self.publisher.bind(self.endpoints.status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_publish = 0.0
        while not self._stop.is_set():
            if self.inbox.poll(50):
                message = decode(self.inbox.recv())
                if isinstance(message, StageReady):
                    self.ready.add(message.stage)
                elif isinstance(message, RequestDone):
                    self.done.append(message)
            if time.monotonic() >= next_publish:
                all_ready = self.ready >= set(ENTRY_POINTS)
                status = {"state": "ready" if all_ready else "loading", "ready": all_ready, "profile": "test",
                          "requests": {"running": 0, "waiting": 0}, "stage_failures": []}
                self.publisher.send(encode(StatusSnapshot(all_ready, status["state"], status)))
                next_publish = time.monotonic() + 0.2

    def wait_for_reports(self, request_ids: list[str], timeout: float = 10.0) -> list[RequestDone]:
        """The RequestDone of each request, in the order given."""
        deadline = time.monotonic() + timeout
        while True:
            by_id = {done.request_id: done for done in list(self.done)}
            if all(request_id in by_id for request_id in request_ids):
                return [by_id[request_id] for request_id in request_ids]
            assert time.monotonic() < deadline, "RequestDone missing for some requests"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.context.destroy(linger=0)


@dataclass
class Service:
    url: str
    supervisor: SupervisorStandIn
    processes: dict[str, multiprocessing.Process]

    def pcm_of(self, response: httpx.Response) -> np.ndarray:
        return np.frombuffer(response.content, dtype="<i2")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    model_dir = init_demo(root / "demo")
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    port = listener.getsockname()[1]
    config = Config(
        model=ModelConfig(dir=model_dir, device="cpu"),
        server=ServerConfig(host="127.0.0.1", port=port, http_workers=1),
        decode=DecodeConfig(processes=1, max_batch_size=CONCURRENT_CLIENTS),
        limits=LimitsConfig(max_upload_bytes=MAX_UPLOAD, max_text_chars=MAX_TEXT, request_timeout_seconds=120),
    )
    endpoints = Endpoints(root / "ipc")
    endpoints.prepare()
    (root / "metrics").mkdir()
    saved_env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(root / "metrics")  # inherited by the spawned children
    supervisor = SupervisorStandIn(endpoints)
    processes = {}
    for stage, entry_point in ENTRY_POINTS.items():
        spec = StageSpec(
            stage=stage, index=0, config=config, model_dir=model_dir, state_dir=root / "state",
            runtime_dir=root, ipc_dir=endpoints.directory, counts=COUNTS,
            listen_socket=listener if stage == "api" else None,
        )
        processes[stage] = multiprocessing.get_context("spawn").Process(
            target=entry_point, args=(spec,), name=spec.name, daemon=True
        )
        processes[stage].start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
            dead = [name for name, p in processes.items() if not p.is_alive()]
            assert not dead, f"processes died during startup: {dead}"
            assert time.monotonic() < deadline, f"not ready after 120 s; ready: {supervisor.ready}"
            time.sleep(0.2)
        yield Service(url, supervisor, processes)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.join(15)
            if process.is_alive():
                process.kill()
        supervisor.close()
        assert processes["api"].exitcode == 0  # SIGTERM: a graceful stop
        listener.close()
        if saved_env is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved_env


def zero_shot(text: str = "Hello there.", **fields: str) -> dict:
    data = {"tts_text": text, "prompt_text": "This is a test prompt.", **fields}
    return {"data": data, "files": {"prompt_wav": ("prompt.wav", PROMPT, "audio/wav")}}


def test_sixteen_concurrent_streaming_clients_all_get_complete_audio(service: Service) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, bytes]:
        request = zero_shot(f"Sentence number {i}.", stream="true", seed=str(i))
        async with client.stream("POST", "/inference_zero_shot", **request) as response:
            # aiter_raw raises if the chunked body ends early: "complete" is checked by the client
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            return response.status_code, response.headers.get("x-request-id", ""), body

    async def all_clients() -> list[tuple[int, str, bytes]]:
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(CONCURRENT_CLIENTS)))

    results = asyncio.run(all_clients())
    for status, _, body in results:
        assert status == 200, body[:300]
        assert len(body) > 0 and len(body) % 2 == 0
        assert np.abs(np.frombuffer(body, dtype="<i2")).max() > 0  # audio, not silence
    reports = service.supervisor.wait_for_reports([request_id for _, request_id, _ in results])
    assert [r.status for r in reports] == [200] * CONCURRENT_CLIENTS
    assert all(r.ttfa_s is not None and 0 < r.ttfa_s <= r.duration_s and r.audio_s > 0 for r in reports)
    assert [r.audio_s for r in reports] == [len(body) / 48000 for _, _, body in results]


def test_whole_wav_response_is_a_24khz_file(service: Service) -> None:
    response = httpx.post(f"{service.url}/inference_zero_shot", **zero_shot(format="wav"), timeout=120)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    samples, rate = soundfile.read(io.BytesIO(response.content))
    assert rate == 24000 and samples.ndim == 1 and len(samples) > 0


@pytest.mark.parametrize("stream", ["true", "false"])
def test_num_tokens_fixes_the_length_of_the_audio(service: Service, stream: str) -> None:
    """What `a10tts bench --num-tokens` relies on: 25 speech tokens per second, 960 samples each."""
    request = zero_shot("Hi.", stream=stream, num_tokens="40")
    response = httpx.post(f"{service.url}/inference_zero_shot", **request, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert len(response.content) == 40 * 960 * 2  # int16 PCM


def test_a_response_says_where_its_time_to_first_audio_went(service: Service) -> None:
    """``Server-Timing``: every phase of the first audio (``first_audio.py``) in ms, adding up to
    no more than the client waited for the headers, which come with the first audio."""
    started = time.perf_counter()
    with httpx.stream("POST", f"{service.url}/inference_zero_shot", **zero_shot(stream="true", num_tokens="20"),
                      timeout=60) as response:
        waited_ms = 1000 * (time.perf_counter() - started)
        timing = server_timing_ms(response.headers.get("server-timing"))
        response.read()
    assert response.status_code == 200
    assert timing is not None and list(timing) == list(PHASES)
    assert 0 < sum(timing.values()) <= waited_ms


def test_bench_measures_the_service_end_to_end(service: Service, tmp_path) -> None:
    """`a10tts bench` against the real service: a warm-up with two requests in flight, two
    levels, fixed lengths, and per-level statistics and first-audio phases in the JSON."""
    out = tmp_path / "run.json"
    code = cli.main(["bench", "--url", service.url, "--concurrency", "1", "2", "--requests", "2", "--warmup", "2",
                     "--warmup-concurrency", "2", "--num-tokens", "20", "--lang", "en", "--label", "demo",
                     "--json", str(out)])
    assert code == 0
    run = json.loads(out.read_text())
    assert [(level["concurrency"], level["requests"], level["errors"]) for level in run["levels"]] == [(1, 2, 0),
                                                                                                  (2, 2, 0)]
    assert all(s["status"] == 200 and s["audio_s"] == pytest.approx(0.8) for s in run["samples"])  # 20 tokens
    assert all(0 < s["ttfa_s"] <= s["total_s"] for s in run["samples"])
    assert all(set(s["phases_ms"]) == set(PHASES) for s in run["samples"])  # each response's Server-Timing
    assert all(set(level["first_audio_phases_ms"]) == set(PHASES) for level in run["levels"])
    assert all(level["first_audio_phases_slowest_ms"] for level in run["levels"])
    assert cli.main(["bench", "--url", service.url, "--warmup-concurrency", "0"]) == 2


def test_bench_ramp_up_staggers_the_clients_and_measures_after_it(service: Service, tmp_path) -> None:
    """`--ramp-up`: each client first sends one unmeasured request, the clients starting spread
    over the ramp; only the requests after it are in the statistics."""
    out = tmp_path / "ramp.json"
    before = read_totals(service.url)["encode"][1]
    code = cli.main(["bench", "--url", service.url, "--concurrency", "2", "--requests", "2", "--warmup", "0",
                     "--ramp-up", "0.5", "--num-tokens", "20", "--lang", "en", "--json", str(out)])
    assert code == 0
    run = json.loads(out.read_text())
    assert run["meta"]["ramp_up_s"] == 0.5
    assert [(level["requests"], level["errors"]) for level in run["levels"]] == [(2, 0)]
    assert read_totals(service.url)["encode"][1] - before == 4  # the server saw the 2 ramp requests too
    assert cli.main(["bench", "--url", service.url, "--ramp-up", "-1"]) == 2


BAD_INPUTS = {
    "unreadable audio": (zero_shot() | {"files": {"prompt_wav": ("p.wav", b"RIFF garbage", "audio/wav")}}, 400,
                         "invalid_audio"),
    "8 kHz prompt": (zero_shot() | {"files": {"prompt_wav": ("p.wav", prompt_wav(2, 8000), "audio/wav")}}, 400,
                     "sample_rate_too_low"),
    "prompt over 30 s": (zero_shot() | {"files": {"prompt_wav": ("p.wav", prompt_wav(31, 16000), "audio/wav")}},
                         400, "prompt_too_long"),
    "empty text": (zero_shot(" "), 422, "text_empty"),
    "over-long text": (zero_shot("word " * MAX_TEXT), 422, "text_too_long"),
    "missing prompt_text": ({"data": {"tts_text": "Hi."}, "files": zero_shot()["files"]}, 422, "missing_field"),
    "missing prompt_wav": ({"data": zero_shot()["data"]}, 422, "missing_field"),
    "oversize upload": (zero_shot() | {"files": {"prompt_wav": ("p.wav", b"\0" * (MAX_UPLOAD + 1), "audio/wav")}},
                        413, "payload_too_large"),
    "bad speed": (zero_shot(speed="9"), 422, "invalid_speed"),
    "num_tokens 0": (zero_shot(num_tokens="0"), 422, "invalid_field"),
    "NaN samples (found by the encode stage)": (
        zero_shot() | {"files": {"prompt_wav": ("p.wav", prompt_wav(nan=True), "audio/wav")}}, 400, "bad_request"
    ),
}


@pytest.mark.parametrize("request_kwargs, status, code", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_its_4xx(service: Service, request_kwargs: dict, status: int, code: str) -> None:
    response = httpx.post(f"{service.url}/inference_zero_shot", **request_kwargs, timeout=60)
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error


def test_openai_speech_with_a_registered_voice(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=120) as client:
        created = client.post("/v1/voices", data={"name": "tester", "prompt_text": "This is a test prompt."},
                              files={"prompt_wav": ("p.wav", PROMPT, "audio/wav")})
        assert created.status_code == 201, created.text
        voice_id = created.json()["id"]
        assert [v["id"] for v in client.get("/v1/voices").json()["data"]] == [voice_id]
        speech = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "tester",
                                                        "response_format": "pcm", "stream": True, "num_tokens": 20})
        assert speech.status_code == 200, speech.text
        assert len(speech.content) == 20 * 960 * 2
        refused = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "tester", "num_tokens": 0})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_field", refused.text
        assert client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "tester",
                                                     "response_format": "mp3"}).status_code == 400
        assert client.delete(f"/v1/voices/{voice_id}").json()["deleted"] is True
        missing = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "tester"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "voice_not_found"


def test_bistream_websocket_speaks_each_sentence(service: Service) -> None:
    async def session() -> tuple[list[dict], list[bytes]]:
        events, audio = [], []
        ws_url = service.url.replace("http", "ws") + "/inference_zero_shot_bistream"
        async with websockets.connect(ws_url, max_size=None) as ws:
            start = {"type": "start", "prompt_text": "This is a test prompt.",
                     "prompt_wav": base64.b64encode(PROMPT).decode()}
            await ws.send(json.dumps(start))
            for piece in ["Hello the", "re. How are", " you today? Fine"]:
                await ws.send(json.dumps({"type": "text", "text": piece}))
            await ws.send(json.dumps({"type": "end"}))
            async for message in ws:
                if isinstance(message, bytes):
                    audio.append(message)
                else:
                    events.append(json.loads(message))
        return events, audio

    events, audio = asyncio.run(session())
    assert [e.get("text") for e in events if e["type"] == "sentence"] == ["Hello there.", "How are you today?", "Fine"]
    assert events[-1] == {"type": "done", "sentences": 3}
    assert audio and sum(len(a) for a in audio) % 2 == 0


def test_a_client_that_disconnects_is_cancelled(service: Service) -> None:
    request = zero_shot("A long text. " * 20, stream="true")
    with httpx.Client(base_url=service.url, timeout=60) as client, client.stream(
        "POST", "/inference_zero_shot", **request
    ) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the first audio, then hang up
    (report,) = service.supervisor.wait_for_reports([response.headers["x-request-id"]])
    assert report.status == 499  # cancelled in the pipeline, counted as "client closed"
    assert httpx.get(f"{service.url}/readyz").status_code == 200


def test_ctrl_c_is_left_to_the_supervisor(service: Service) -> None:
    os.kill(service.processes["api"].pid, signal.SIGINT)
    time.sleep(0.3)
    assert service.processes["api"].is_alive()
    assert httpx.get(f"{service.url}/livez").status_code == 200


def test_metrics_have_the_ttfa_histogram_after_requests(service: Service) -> None:
    text = httpx.get(f"{service.url}/metrics").text
    count = next(line for line in text.splitlines() if line.startswith("a10tts_time_to_first_audio_seconds_count"))
    assert float(count.split()[-1]) >= CONCURRENT_CLIENTS
    assert 'a10tts_requests_total{status="200"}' in text
    assert 'a10tts_requests_total{status="422"}' in text
    assert "a10tts_real_time_factor_bucket" in text
    # recorded by the LM worker at admission, merged through the multiprocess directory
    queued = next(line for line in text.splitlines() if line.startswith("a10tts_queue_time_seconds_count"))
    assert float(queued.split()[-1]) >= CONCURRENT_CLIENTS
    status = httpx.get(f"{service.url}/v1/status").json()
    assert status["ready"] is True and status["profile"] == "test"


def test_the_phases_of_first_audio_add_up_to_the_ttfa(service: Service) -> None:
    """Every stage stamps the first chunk; the phases between the stamps account for the whole TTFA."""
    samples = {
        (name, labels.get("phase")): value
        for family in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text)
        for name, labels, value, *_ in family.samples
    }
    ttfa_count = samples[("a10tts_time_to_first_audio_seconds_count", None)]
    ttfa_sum = samples[("a10tts_time_to_first_audio_seconds_sum", None)]
    assert ttfa_count >= CONCURRENT_CLIENTS
    total = 0.0
    for phase in PHASES:
        assert samples[("a10tts_first_audio_phase_seconds_count", phase)] == ttfa_count, phase
        total += samples[("a10tts_first_audio_phase_seconds_sum", phase)]
    assert total == pytest.approx(ttfa_sum, rel=0.02, abs=0.005 * ttfa_count)
    totals = read_totals(service.url)  # what `a10tts bench` reads before and after each level
    assert totals is not None and {phase: count for phase, (_, count) in totals.items()} == dict.fromkeys(
        PHASES, ttfa_count
    )
