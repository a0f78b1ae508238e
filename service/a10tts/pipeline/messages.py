"""Typed messages between processes. msgpack via msgspec: no pickle on any socket.

Boundary contract between the HTTP workers, the stages and the supervisor. Stage-internal
messages (encode -> LM -> decode) live with the stages; tensors there travel as raw frames.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class SynthesisRequest(msgspec.Struct, tag="synth", frozen=True):
    """HTTP worker -> encode stage: one request to synthesise."""

    request_id: str
    reply_to: int  # index of the HTTP worker waiting for the audio
    mode: str  # "zero_shot" | "cross_lingual" | "instruct2"
    text: str
    prompt_text: str = ""
    instruct_text: str = ""
    prompt_wav: bytes | None = None  # the uploaded file as sent (any format soundfile reads)
    voice_id: str | None = None  # a registered voice instead of prompt_wav
    stream: bool = True
    speed: float = 1.0
    seed: int | None = None
    num_tokens: int | None = None  # a fixed number of speech tokens (benchmarks on random weights)
    arrival: float = 0.0  # time.time() when the HTTP request arrived


class Cancel(msgspec.Struct, tag="cancel", frozen=True):
    """HTTP worker -> LM stage (forwarded to decode): the client went away; free everything."""

    request_id: str


class AudioChunk(msgspec.Struct, tag="audio", frozen=True):
    """Decode stage -> HTTP worker: the next piece of a request's audio."""

    request_id: str
    seq: int
    pcm: bytes  # little-endian int16, mono, 24 kHz
    final: bool
    marks: dict[str, float] = {}  # on the first chunk: when each stage passed it (first_audio.py)


class RequestFailed(msgspec.Struct, tag="failed", frozen=True):
    """Any stage -> HTTP worker: the request cannot finish. `status` is the HTTP status to send."""

    request_id: str
    status: int  # 400/422 bad input, 503 overloaded or stage restarting, 500 internal
    message: str


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    """Every stage and HTTP worker -> supervisor, about once a second, from its main loop."""

    stage: str  # "api" | "encode" | "llm" | "decode"
    index: int
    pid: int
    load: dict[str, float] = {}  # e.g. running, waiting, kv_used_tokens, kv_capacity_tokens


class StageReady(msgspec.Struct, tag="ready", frozen=True):
    """A stage or HTTP worker -> supervisor: loaded and serving."""

    stage: str
    index: int
    pid: int
    info: dict[str, Any] = {}


class RequestDone(msgspec.Struct, tag="done", frozen=True):
    """HTTP worker -> supervisor: one finished request, for the status window and STATUS=."""

    request_id: str
    status: int
    ttfa_s: float | None  # arrival to the first audio byte sent; None when none was sent
    duration_s: float
    audio_s: float
    queue_s: float | None = None
    ttfa_phases_s: dict[str, float] = {}  # where the TTFA went (first_audio.py); empty without audio


class StatusSnapshot(msgspec.Struct, tag="status", frozen=True):
    """Supervisor -> HTTP workers (PUB/SUB): readiness and the `/v1/status` document."""

    ready: bool
    state: str  # "loading" | "ready" | "reloading" | "draining" | "stopping"
    status: dict[str, Any]


Message = Union[SynthesisRequest, Cancel, AudioChunk, RequestFailed, Heartbeat, StageReady, RequestDone, StatusSnapshot]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    """Raises msgspec.ValidationError/DecodeError for anything that is not a known message."""
    return _decoder.decode(data)
