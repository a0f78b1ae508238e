"""OpenAI-style speech and the voice registry routes, on the fake pipeline."""

from __future__ import annotations

import pytest

from a10tts.config import Config
from a10tts.config.schema import LimitsConfig
from api_fakes import PROMPT, wav_bytes


def register(client, name: str = "alice", prompt_text: str = "Alice's transcript.", audio: bytes = PROMPT):
    return client.post(
        "/v1/voices", data={"name": name, "prompt_text": prompt_text}, files={"prompt_wav": ("a.wav", audio)}
    )


def test_register_list_get_and_delete_a_voice(client, voices):
    created = register(client)
    assert created.status_code == 201, created.text
    voice = created.json()
    assert voice["object"] == "voice" and voice["name"] == "alice" and voice["prompt_text"] == "Alice's transcript."
    assert voices.get(voice["id"]).wav == PROMPT
    assert client.get("/v1/voices").json() == {"object": "list", "data": [voice]}
    assert client.get(f"/v1/voices/{voice['id']}").json() == voice
    assert client.get("/v1/voices/alice").json() == voice
    deleted = client.delete("/v1/voices/alice")
    assert deleted.json() == {"id": voice["id"], "object": "voice.deleted", "deleted": True}
    assert client.get(f"/v1/voices/{voice['id']}").status_code == 404
    assert client.delete(f"/v1/voices/{voice['id']}").json()["error"]["code"] == "voice_not_found"


def test_voice_registration_errors(make_client):
    client = make_client(Config(limits=LimitsConfig(max_prompt_seconds=1.0)))
    assert register(client).status_code == 201
    duplicate = register(client)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "voice_exists"
    cases = [
        (register(client, name=" padded"), 422, "invalid_field"),
        (register(client, name="voice-0123456789abcdef"), 422, "invalid_field"),
        (register(client, name="bob", audio=b"nope"), 400, "invalid_audio"),
        (register(client, name="bob", audio=wav_bytes(1.5)), 400, "prompt_too_long"),
        (client.post("/v1/voices", data={"name": "bob"}), 422, "missing_field"),
        (client.post("/v1/voices", files={"prompt_wav": ("a.wav", PROMPT)}), 422, "missing_field"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text


def speech(client, **fields):
    return client.post("/v1/audio/speech", json={"input": "Hello.", "voice": "alice", **fields})


def test_speech_uses_the_registered_voice_and_returns_wav_by_default(client, pipeline):
    voice_id = register(client).json()["id"]
    response = speech(client, model="tts-1")
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert response.content[:4] == b"RIFF"
    (request,) = pipeline.submitted
    assert (request.mode, request.voice_id, request.prompt_wav) == ("zero_shot", voice_id, None)
    assert request.prompt_text == "Alice's transcript." and request.stream is False


def test_the_voice_and_instructions_choose_the_mode(client, pipeline):
    register(client)
    register(client, name="no-transcript", prompt_text="")
    assert speech(client, voice="no-transcript", response_format="pcm", stream=True).status_code == 200
    assert speech(client, instructions="Whisper.").status_code == 200
    assert [(r.mode, r.stream, r.instruct_text) for r in pipeline.submitted] == [
        ("cross_lingual", True, ""),
        ("instruct2", False, "Whisper."),
    ]


@pytest.mark.parametrize(
    "fields, status, code",
    [
        ({"voice": "nobody"}, 404, "voice_not_found"),
        ({"response_format": "mp3"}, 400, "unsupported_format"),
        ({"response_format": "opus"}, 400, "unsupported_format"),
        ({"input": ""}, 422, "text_empty"),
        ({"speed": 0.1}, 422, "invalid_speed"),
        ({"speed": 1.2, "stream": True}, 422, "invalid_speed"),
        ({"input": None}, 422, "invalid_field"),
        ({"seed": -1}, 422, "invalid_field"),
    ],
)
def test_speech_errors(client, pipeline, fields, status, code):
    register(client)
    response = speech(client, **fields)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert pipeline.submitted == []


def test_speech_body_problems(client):
    missing = client.post("/v1/audio/speech", json={"voice": "alice"})
    assert missing.status_code == 422 and missing.json()["error"] == {
        "code": "missing_field",
        "message": "input is required",
    }
    broken = client.post("/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
