"""The bistream WebSocket protocol on the fake pipeline."""

from __future__ import annotations

import base64
import json

import pytest

from api_fakes import CHUNKS, PROMPT, chunk_pcm

START = {"type": "start", "prompt_text": "A transcript.", "prompt_wav": base64.b64encode(PROMPT).decode()}


def receive_all(ws) -> tuple[list[dict], list[bytes], int]:
    """Events, audio and the close code, once the server closes."""
    events, audio = [], []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return events, audio, message["code"]
        if message.get("bytes") is not None:
            audio.append(message["bytes"])
        else:
            events.append(json.loads(message["text"]))


def test_text_pieces_become_sentences_spoken_in_order(client, pipeline):
    with client.websocket_connect("/inference_zero_shot_bistream") as ws:
        ws.send_json(START)
        for piece in ["First one. Sec", "ond one! And a", " tail"]:
            ws.send_json({"type": "text", "text": piece})
        ws.send_json({"type": "end"})
        events, audio, code = receive_all(ws)
    assert code == 1000
    assert events == [
        {"type": "sentence", "index": 0, "text": "First one."},
        {"type": "sentence", "index": 1, "text": "Second one!"},
        {"type": "sentence", "index": 2, "text": "And a tail"},
        {"type": "done", "sentences": 3},
    ]
    assert audio == [chunk_pcm(seq) for seq in range(CHUNKS)] * 3
    assert [r.text for r in pipeline.submitted] == ["First one.", "Second one!", "And a tail"]
    assert all(r.stream and r.prompt_wav == PROMPT and r.mode == "zero_shot" for r in pipeline.submitted)
    assert [d.status for d in pipeline.reports] == [200, 200, 200]


def test_a_registered_voice_can_be_used(client, pipeline):
    voice = client.post("/v1/voices", data={"name": "bob", "prompt_text": "Bob."},
                        files={"prompt_wav": ("b.wav", PROMPT)}).json()
    with client.websocket_connect("/inference_zero_shot_bistream") as ws:
        ws.send_json({"type": "start", "voice": "bob"})
        ws.send_json({"type": "text", "text": "Hi."})
        ws.send_json({"type": "end"})
        events, _, code = receive_all(ws)
    assert code == 1000 and events[-1] == {"type": "done", "sentences": 1}
    assert pipeline.submitted[0].voice_id == voice["id"] and pipeline.submitted[0].prompt_text == "Bob."


ERRORS = {
    "not JSON": ("{nope", 4400, "invalid_json"),
    "text before start": ({"type": "text", "text": "hi"}, 4422, "invalid_message"),
    "unknown field": (START | {"colour": "blue"}, 4422, "invalid_field"),
    "missing transcript": (START | {"prompt_text": ""}, 4422, "missing_field"),
    "bad base64": (START | {"prompt_wav": "!!!"}, 4400, "invalid_audio"),
    "not audio": (START | {"prompt_wav": base64.b64encode(b"noise").decode()}, 4400, "invalid_audio"),
    "unknown voice": ({"type": "start", "voice": "nobody"}, 4404, "voice_not_found"),
}


@pytest.mark.parametrize("start, close_code, error_code", ERRORS.values(), ids=ERRORS.keys())
def test_a_bad_start_gets_an_error_event_and_a_close_code(client, pipeline, start, close_code, error_code):
    with client.websocket_connect("/inference_zero_shot_bistream") as ws:
        ws.send_text(start if isinstance(start, str) else json.dumps(start))
        events, audio, code = receive_all(ws)
    assert code == close_code and audio == []
    assert events[0]["type"] == "error" and events[0]["error"]["code"] == error_code
    assert pipeline.submitted == []


def test_a_stage_failure_ends_the_session_with_its_status(client, pipeline):
    with client.websocket_connect("/inference_zero_shot_bistream") as ws:
        ws.send_json(START)
        ws.send_json({"type": "text", "text": "Fine. FAIL here. Never reached."})
        ws.send_json({"type": "end"})
        events, audio, code = receive_all(ws)
    assert code == 4400
    assert [e["type"] for e in events] == ["sentence", "sentence", "error"]
    assert events[-1]["error"]["message"] == "prompt audio is too quiet to use"
    assert audio == [chunk_pcm(seq) for seq in range(CHUNKS)]
    statuses = [d.status for d in pipeline.reports]
    assert statuses[:2] == [200, 400] and set(statuses[2:]) <= {499}  # a third, if submitted, is cancelled
    assert len(statuses) == len(pipeline.submitted)
    assert pipeline.cancelled == [r.request_id for r in pipeline.submitted[1:]]


def test_binary_messages_are_refused(client):
    with client.websocket_connect("/inference_zero_shot_bistream") as ws:
        ws.send_json(START)
        ws.send_bytes(b"\x00\x01")
        events, _, code = receive_all(ws)
    assert code == 4400 and "JSON text" in events[0]["error"]["message"]


def test_a_client_that_leaves_cancels_its_sentences(client, pipeline):
    with client.websocket_connect("/inference_zero_shot_bistream") as ws:
        ws.send_json(START)
        ws.send_json({"type": "text", "text": "HANG forever. "})
        assert ws.receive_json()["type"] == "sentence"
        assert ws.receive_bytes() == chunk_pcm(0)
    assert pipeline.cancelled == [pipeline.submitted[0].request_id]
    assert pipeline.reports[-1].status == 499

