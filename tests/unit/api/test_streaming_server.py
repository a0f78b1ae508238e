"""Behaviour only a real HTTP server shows: aborted streams, disconnects, chunked uploads.

uvicorn serves the app (on the fake pipeline) from a thread on a loopback port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from a10tts.api.app import create_app
from a10tts.config import Config
from a10tts.config.schema import LimitsConfig
from a10tts.voices import VoiceRegistry
from api_fakes import FakePipeline, chunk_pcm, zero_shot_form


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, FakePipeline]]:
    pipeline = FakePipeline()
    config = Config(limits=LimitsConfig(max_upload_bytes=200_000))
    app = create_app(config, pipeline, VoiceRegistry(tmp_path_factory.mktemp("state")))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", pipeline
    server.should_exit = True
    thread.join(10)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failure_after_audio_started_cuts_the_stream_short(served):
    url, pipeline = served
    data, files = zero_shot_form(tts_text="MIDWAY", stream="true")
    received = bytearray()
    # No final chunk: the client knows the body is incomplete.
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
        "POST", f"{url}/inference_zero_shot", data=data, files=files
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == chunk_pcm(0)
    wait_for(lambda: pipeline.reports and pipeline.reports[-1].status == 500)
    assert pipeline.cancelled[-1] == pipeline.submitted[-1].request_id


def test_a_client_that_hangs_up_cancels_its_request(served):
    url, pipeline = served
    data, files = zero_shot_form(tts_text="HANG", stream="true")
    with httpx.stream("POST", f"{url}/inference_zero_shot", data=data, files=files) as response:
        assert next(response.iter_raw()) == chunk_pcm(0)
    request_id = pipeline.submitted[-1].request_id
    wait_for(lambda: request_id in pipeline.cancelled)
    assert pipeline.reports[-1].status == 499 and pipeline.reports[-1].ttfa_s is not None


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(served):
    url, pipeline = served
    submitted = len(pipeline.submitted)
    host, port = url.removeprefix("http://").split(":")
    head = (
        "POST /inference_zero_shot HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n\r\n"
    )
    part = b'--x\r\nContent-Disposition: form-data; name="prompt_wav"; filename="p.wav"\r\n\r\n'
    block = b"\0" * 65536
    reply, sent = b"", 0
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head.encode() + b"%x\r\n%s\r\n" % (len(part), part))
        connection.settimeout(0.05)
        while sent < 6_000_000 and not reply:  # never sends the end: only the limit can stop it
            try:
                connection.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
                reply = connection.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:  # the server answered and closed while we were still sending
                break
        connection.settimeout(5)
        while not reply.endswith(b"}}") and (more := connection.recv(65536)):
            reply += more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"payload_too_large"' in reply and b"200000 bytes" in reply
    assert sent < 1_000_000  # refused just past the 200 kB limit, not after reading everything
    assert len(pipeline.submitted) == submitted
