"""Probes, metrics, the status document, the OpenAPI schema and API keys."""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client import REGISTRY
from starlette.testclient import WebSocketDenialResponse

from a10tts.api import metrics
from a10tts.config import Config
from a10tts.config.schema import ServerConfig
from a10tts.pipeline.messages import StatusSnapshot
from api_fakes import ready_snapshot, zero_shot_form


def test_probes_follow_the_supervisors_readiness(client, pipeline):
    pipeline.snapshot = None
    assert client.get("/livez").json() == {"status": "alive"}
    for path in ("/readyz", "/healthz"):
        response = client.get(path)
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json()["error"]["code"] == "not_ready"
    assert client.get("/v1/status").status_code == 503
    pipeline.snapshot = ready_snapshot(running=1, waiting=0)
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/status").json() == pipeline.snapshot.status


def test_metrics_expose_request_and_status_series(client):
    before = REGISTRY.get_sample_value("a10tts_time_to_first_audio_seconds_count") or 0
    data, files = zero_shot_form(stream="true")
    assert client.post("/inference_zero_shot", data=data, files=files).status_code == 200
    text = client.get("/metrics").text
    assert REGISTRY.get_sample_value("a10tts_time_to_first_audio_seconds_count") == before + 1
    for name in (
        "a10tts_time_to_first_audio_seconds_bucket",
        "a10tts_request_duration_seconds_bucket",
        "a10tts_queue_time_seconds_bucket",
        "a10tts_real_time_factor_bucket",
        "a10tts_audio_seconds_total",
        'a10tts_requests_total{status="200"}',
    ):
        assert name in text, name


def test_status_gauges_come_from_the_snapshot():
    status = {"profile": "throughput", "requests": {"running": 3, "waiting": 2},
              "kv_cache": {"used_tokens": 256, "capacity_tokens": 1024}}
    metrics.observe_status(status)
    metrics.observe_status(status | {"profile": "low-latency"})
    assert REGISTRY.get_sample_value("a10tts_requests_running") == 3
    assert REGISTRY.get_sample_value("a10tts_requests_waiting") == 2
    assert REGISTRY.get_sample_value("a10tts_kv_cache_usage_ratio") == 0.25
    assert REGISTRY.get_sample_value("a10tts_profile_info", {"profile": "low-latency"}) == 1
    assert REGISTRY.get_sample_value("a10tts_profile_info", {"profile": "throughput"}) == 0


def test_openapi_documents_every_route_and_the_error_shape(client):
    schema = client.get("/openapi.json").json()
    for path in ("/inference_zero_shot", "/inference_cross_lingual", "/inference_instruct2", "/v1/audio/speech",
                 "/v1/voices", "/v1/voices/{voice}", "/livez", "/readyz", "/healthz", "/metrics", "/v1/status"):
        assert path in schema["paths"], path
    form = schema["paths"]["/inference_zero_shot"]["post"]
    assert "422" in form["responses"] and "ErrorBody" in schema["components"]["schemas"]


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text("# one key per line\nkey-one\n\n  key-two  \n")
    return path


@pytest.fixture
def secured(make_client, keys_file):
    return make_client(Config(server=ServerConfig(api_keys_file=str(keys_file))), warmup="warm")


def test_api_keys_guard_everything_but_probes_metrics_and_the_schema(secured):
    missing = secured.get("/v1/voices")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    wrong = secured.get("/v1/voices", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "unknown API key" in wrong.json()["error"]["message"]
    for key in ("key-one", "key-two"):
        assert secured.get("/v1/voices", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    for path in ("/livez", "/readyz", "/healthz", "/metrics", "/openapi.json"):
        assert secured.get(path).status_code == 200, path
    data, files = zero_shot_form()
    assert secured.post("/inference_zero_shot", data=data, files=files).status_code == 401
    warmup = secured.post("/inference_zero_shot", data=data, files=files, headers={"X-A10TTS-Warmup": "warm"})
    assert warmup.status_code == 200


def test_the_keys_file_is_reread_when_it_changes(secured, keys_file, monkeypatch):
    monkeypatch.setattr("a10tts.api.auth.RECHECK_INTERVAL_S", 0.0)
    keys_file.write_text("key-three\n")
    os.utime(keys_file, (time.time() + 5, time.time() + 5))
    assert secured.get("/v1/voices", headers={"Authorization": "Bearer key-one"}).status_code == 401
    assert secured.get("/v1/voices", headers={"Authorization": "Bearer key-three"}).status_code == 200
    keys_file.unlink()  # unreadable: fail closed
    assert secured.get("/v1/voices", headers={"Authorization": "Bearer key-three"}).status_code == 401


def test_websockets_need_a_key_too(secured):
    with pytest.raises(WebSocketDenialResponse) as denied, secured.websocket_connect("/inference_zero_shot_bistream"):
        pass
    assert denied.value.status_code == 401 and denied.value.json()["error"]["code"] == "unauthorized"
    with secured.websocket_connect("/inference_zero_shot_bistream", headers={"Authorization": "Bearer key-one"}):
        pass


def test_not_ready_snapshot_state_is_reported(client, pipeline):
    pipeline.snapshot = StatusSnapshot(ready=False, state="draining", status={})
    assert "draining" in client.get("/readyz").json()["error"]["message"]
