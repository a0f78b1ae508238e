"""LightTTS-compatible routes on the fake pipeline: formats, fields, and every bad input."""

from __future__ import annotations

import io
import struct

import pytest
import soundfile
from prometheus_client import REGISTRY

from a10tts.config import Config
from a10tts.config.schema import LimitsConfig
from a10tts.pipeline.messages import StatusSnapshot
from api_fakes import CHUNKS, PROMPT, chunk_pcm, ready_snapshot, wav_bytes, zero_shot_form

ALL_AUDIO = b"".join(chunk_pcm(seq) for seq in range(CHUNKS))


def requests_total(status: int) -> float:
    return REGISTRY.get_sample_value("a10tts_requests_total", {"status": str(status)}) or 0.0


def test_zero_shot_returns_raw_pcm_and_forwards_every_field(client, pipeline):
    data, files = zero_shot_form(seed="7", speed="1.5")
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 200, response.text
    assert response.content == ALL_AUDIO
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-sample-rate"] == "24000"
    assert response.headers["x-sample-format"] == "s16le"
    (request,) = pipeline.submitted
    assert (request.mode, request.text, request.prompt_text) == ("zero_shot", "Hello there.", "A prompt transcript.")
    assert request.prompt_wav == PROMPT and request.voice_id is None
    assert (request.stream, request.speed, request.seed, request.reply_to) == (False, 1.5, 7, 0)
    assert request.arrival > 0
    assert response.headers["x-request-id"] == request.request_id
    assert pipeline.released == [request.request_id] and pipeline.cancelled == []
    (done,) = pipeline.reports
    assert done.status == 200 and done.ttfa_s is not None and done.ttfa_s <= done.duration_s
    assert done.audio_s == pytest.approx(len(ALL_AUDIO) / 48000)


def test_streaming_wav_starts_with_an_unknown_length_header(client):
    data, files = zero_shot_form(stream="true", format="wav")
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    header, pcm = response.content[:44], response.content[44:]
    riff, riff_size, wave, data_size = struct.unpack("<4sI4s28xI", header)
    assert (riff, wave, riff_size, data_size) == (b"RIFF", b"WAVE", 0xFFFFFFFF, 0xFFFFFFFF)
    assert pcm == ALL_AUDIO


def test_whole_wav_is_a_valid_file(client):
    data, files = zero_shot_form(format="wav")
    response = client.post("/inference_zero_shot", data=data, files=files)
    samples, rate = soundfile.read(io.BytesIO(response.content), dtype="int16")
    assert rate == 24000 and samples.ndim == 1 and samples.tobytes() == ALL_AUDIO


def test_a10_guide_aliases(client, pipeline):
    data, files = zero_shot_form(tts_text=None, stream=None, prompt_wav=None)
    data |= {"text": "Aliased text.", "streaming": "true", "language": "en", "tts_model_name": "anything"}
    files = {"prompt_audio": ("p.wav", PROMPT, "audio/wav")}
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 200, response.text
    (request,) = pipeline.submitted
    assert (request.text, request.stream, request.prompt_wav) == ("Aliased text.", True, PROMPT)


def test_cross_lingual_needs_no_transcript_and_instruct2_needs_an_instruction(client, pipeline):
    data, files = zero_shot_form(prompt_text=None)
    assert client.post("/inference_cross_lingual", data=data, files=files).status_code == 200
    response = client.post("/inference_instruct2", data=data, files=files)
    assert response.status_code == 422 and "instruct_text" in response.json()["error"]["message"]
    data["instruct_text"] = "Speak slowly."
    assert client.post("/inference_instruct2", data=data, files=files).status_code == 200
    assert [r.mode for r in pipeline.submitted] == ["cross_lingual", "instruct2"]
    assert pipeline.submitted[1].instruct_text == "Speak slowly."


BAD_INPUTS = {
    "missing text": ({"tts_text": None}, 422, "missing_field", "tts_text is required"),
    "blank text": ({"tts_text": "   "}, 422, "text_empty", "tts_text is empty"),
    "text too long": ({"tts_text": "x" * 51}, 422, "text_too_long", "the limit is 50"),
    "missing transcript": ({"prompt_text": None}, 422, "missing_field", "prompt_text is required"),
    "missing prompt": ({"prompt_wav": None}, 422, "missing_field", "prompt_wav is required"),
    "not audio": ({"prompt_wav": b"this is not audio at all"}, 400, "invalid_audio", "could not be read"),
    "8 kHz prompt": ({"prompt_wav": wav_bytes(1.0, rate=8000)}, 400, "sample_rate_too_low", "8000 Hz"),
    "prompt over the limit": ({"prompt_wav": wav_bytes(1.5, rate=16000)}, 400, "prompt_too_long", "limit is 1 s"),
    "prompt too short": ({"prompt_wav": wav_bytes(0.2)}, 400, "prompt_too_short", "at least 0.5 s"),
    "speed out of range": ({"speed": "3"}, 422, "invalid_speed", "between 0.5 and 2.0"),
    "speed not a number": ({"speed": "fast"}, 422, "invalid_field", "speed"),
    "speed while streaming": ({"speed": "1.5", "stream": "true"}, 422, "invalid_speed", "without streaming"),
    "mp3 output": ({"format": "mp3"}, 400, "unsupported_format", "'pcm'"),
    "seed not an integer": ({"seed": "abc"}, 422, "invalid_field", "seed"),
    "seed out of range": ({"seed": str(2**64)}, 422, "invalid_field", "seed"),
    "oversize upload": ({"prompt_wav": b"\0" * 300_000}, 413, "payload_too_large", "150000 bytes"),
}


@pytest.mark.parametrize("overrides, status, code, says", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_a_clear_error_and_never_reaches_the_pipeline(
    make_client, pipeline, overrides, status, code, says
):
    limits = LimitsConfig(max_text_chars=50, max_prompt_seconds=1.0, max_upload_bytes=150_000)
    client = make_client(Config(limits=limits))
    before = requests_total(status)
    data, files = zero_shot_form(**overrides)
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and says in error["message"], error
    assert pipeline.submitted == []
    assert requests_total(status) == before + 1
    assert pipeline.reports[-1].status == status


def test_a_stage_rejection_before_audio_is_a_json_error(client, pipeline):
    data, files = zero_shot_form(tts_text="FAIL please", stream="true")
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "bad_request", "message": "prompt audio is too quiet to use"}}
    assert pipeline.cancelled == [pipeline.submitted[0].request_id]
    assert pipeline.reports[-1].status == 400 and pipeline.reports[-1].ttfa_s is None


def test_a_failure_after_audio_without_streaming_is_still_a_json_error(client):
    data, files = zero_shot_form(tts_text="MIDWAY")
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 500 and response.json()["error"]["message"] == "boom"


@pytest.mark.parametrize(
    "snapshot, state",
    [(None, "starting"), (StatusSnapshot(ready=False, state="reloading", status={}), "reloading")],
)
def test_not_ready_is_503_with_retry_after(client, pipeline, snapshot, state):
    pipeline.snapshot = snapshot
    data, files = zero_shot_form()
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "not_ready" and state in response.json()["error"]["message"]
    assert pipeline.submitted == []


def test_the_supervisors_warmup_passes_the_readiness_gate(make_client, pipeline):
    client = make_client(warmup="s3cret")
    pipeline.snapshot = None
    data, files = zero_shot_form()
    wrong = client.post("/inference_zero_shot", data=data, files=files, headers={"X-A10TTS-Warmup": "guess"})
    assert wrong.status_code == 503
    right = client.post("/inference_zero_shot", data=data, files=files, headers={"X-A10TTS-Warmup": "s3cret"})
    assert right.status_code == 200 and right.content == ALL_AUDIO


def test_a_full_server_is_503_with_retry_after(client, pipeline):
    capacity = Config().llm.max_running_requests + Config().limits.max_waiting_requests
    pipeline.snapshot = ready_snapshot(running=32, waiting=capacity - 32)
    data, files = zero_shot_form()
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
    pipeline.snapshot = ready_snapshot(running=32, waiting=capacity - 33)
    assert client.post("/inference_zero_shot", data=data, files=files).status_code == 200


def test_no_encode_worker_is_503(client, pipeline):
    pipeline.accepting = False
    data, files = zero_shot_form()
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 503 and "no encode worker" in response.json()["error"]["message"]


def test_a_request_past_its_deadline_is_504_and_cancelled(make_client, pipeline):
    client = make_client(Config(limits=LimitsConfig(request_timeout_seconds=0.3)))
    data, files = zero_shot_form(tts_text="HANG")
    response = client.post("/inference_zero_shot", data=data, files=files)
    assert response.status_code == 504
    assert "limits.request_timeout_seconds" in response.json()["error"]["message"]
    assert pipeline.cancelled == [pipeline.submitted[0].request_id]
    assert pipeline.reports[-1].status == 504


def test_unknown_routes_and_methods_use_the_error_shape(client):
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    response = client.get("/inference_zero_shot")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
