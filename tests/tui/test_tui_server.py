"""The HTTP source against a real HTTP server on loopback: readiness, status, the TTFA probe."""

from __future__ import annotations

import socket

import pytest

from a10tts_tui.sources.server import ServerClient

from tui_fakes import STATUS, StatusServer


def test_ready_service_and_its_status():
    with StatusServer() as server:
        snapshot = ServerClient(server.url).read()
    assert snapshot.reachable and snapshot.ready and snapshot.error == ""
    assert snapshot.get("ttfa_s", "p50") == 0.121
    assert snapshot.get("requests", "per_second") == 2.5
    assert snapshot.get("no", "such", "field") is None


def test_loading_service_is_reachable_but_not_ready():
    with StatusServer(status=dict(STATUS, state="loading", ready=False), ready=False) as server:
        snapshot = ServerClient(server.url).read()
    assert snapshot.reachable and not snapshot.ready and snapshot.get("state") == "loading"


def test_stopped_service_is_explained():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: connection refused
        snapshot = ServerClient(url).read()
    assert not snapshot.reachable
    assert "not running" in snapshot.error and url in snapshot.error


def test_hung_service_times_out_with_an_explanation():
    with StatusServer() as server:
        server.hang.set()
        snapshot = ServerClient(server.url, timeout_s=0.3).read()
    assert not snapshot.reachable and "did not answer in time" in snapshot.error


def test_something_else_on_the_port_is_recognised():
    with StatusServer(status=["not", "an", "object"]) as server:
        snapshot = ServerClient(server.url).read()
    assert snapshot.reachable and snapshot.status is None and "not an object" in snapshot.error


def test_probe_measures_time_to_first_audio_with_a_valid_prompt():
    with StatusServer(first_audio_delay_s=0.3) as server:
        result = ServerClient(server.url).probe()
        (request,) = server.probes
    assert result.error == "" and 0.3 <= result.ttfa_s < 5
    assert request["content_type"].startswith("multipart/form-data")
    for field in (b'name="tts_text"', b'name="prompt_text"', b'name="stream"', b'name="prompt_wav"', b"RIFF"):
        assert field in request["body"]


@pytest.mark.parametrize("status, message",
                         [(503, "model is loading"), (400, "prompt_wav: unreadable audio")])
def test_probe_shows_the_services_own_error_message(status, message):
    with StatusServer() as server:
        server.probe_error = (status, {"message": message})
        result = ServerClient(server.url).probe()
    assert result.ttfa_s is None and result.error == f"the service answered {status}: {message}"
