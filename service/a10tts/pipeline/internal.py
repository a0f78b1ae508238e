"""Messages between the stages (encode -> LM -> decode). Tensors travel beside them as raw frames
(``transport.pack``); the boundary messages with HTTP workers are in ``messages.py``.

Flow of one request inside the pipeline:

* encode -> LM: ``EncodedRequest`` with tensors ``text.{i}`` (the text ids of segment ``i``),
  ``llm_prompt_text`` and ``llm_prompt_speech`` (what the LM sees before every segment) and
  the voice's ``PromptFeatures`` fields (``PROMPT_TENSORS``).
* LM -> decode: ``DecodeStart`` (with the ``PromptFeatures`` tensors) when the request starts, then
  ``TokenBatch`` messages, one per LM step and decode worker, with each request's new tokens.
* HTTP worker -> LM -> decode: the contract's ``Cancel``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Union

import msgspec
import torch

from a10tts.engine.frontend import ModelInputs, PromptFeatures

from .messages import Cancel, SynthesisRequest

PROMPT_TENSORS = tuple(f.name for f in fields(PromptFeatures))


class EncodedRequest(msgspec.Struct, tag="encoded", frozen=True):
    """Encode -> LM: a request's text segments and voice, ready for the LM and the flow."""

    request_id: str
    reply_to: int
    num_segments: int
    stream: bool
    speed: float
    seed: int | None
    num_tokens: int | None
    arrival: float = 0.0  # time.time() at the HTTP worker: the LM measures the queue time
    encoded: float = 0.0  # time.time() when the encode stage sent it


class DecodeStart(msgspec.Struct, tag="decode_start", frozen=True):
    """LM -> decode: a request starts; its tokens follow. Tensors: the voice's PromptFeatures."""

    request_id: str
    reply_to: int
    num_segments: int
    stream: bool
    speed: float
    seed: int | None
    marks: dict[str, float] = {}  # arrival, encoded, first_token (first_audio.py)


class TokenDelta(msgspec.Struct, array_like=True, frozen=True):
    request_id: str
    segment: int
    tokens: list[int]  # new speech tokens of this segment, in order
    finished: bool  # the segment's token stream ends after these
    chunk_sent: float | None = None  # on the delta completing the first chunk: when the LM sent it (first_audio.py)


class TokenBatch(msgspec.Struct, tag="tokens", frozen=True):
    """LM -> decode: what one LM step produced for this decode worker's requests."""

    deltas: list[TokenDelta]


ENCODE_INBOX = msgspec.msgpack.Decoder(SynthesisRequest)
LLM_INBOX = msgspec.msgpack.Decoder(Union[EncodedRequest, Cancel])
DECODE_INBOX = msgspec.msgpack.Decoder(Union[DecodeStart, TokenBatch, Cancel])


def prompt_tensors(prompt: PromptFeatures) -> dict[str, torch.Tensor]:
    return {name: getattr(prompt, name) for name in PROMPT_TENSORS}


def prompt_from(tensors: dict[str, torch.Tensor]) -> PromptFeatures:
    """The PromptFeatures carried by a message; KeyError names a missing tensor."""
    return PromptFeatures(**{name: tensors[name] for name in PROMPT_TENSORS})


def encoded_tensors(segments: list[ModelInputs]) -> dict[str, torch.Tensor]:
    """The tensors of an ``EncodedRequest`` (the LM prompt and voice are the same for every segment)."""
    first = segments[0]
    tensors = {f"text.{i}": segment.text_ids for i, segment in enumerate(segments)}
    tensors["llm_prompt_text"] = first.llm_prompt_text_ids
    tensors["llm_prompt_speech"] = first.llm_prompt_speech_tokens
    tensors.update(prompt_tensors(first.prompt))
    return tensors


def segment_texts(tensors: dict[str, torch.Tensor], num_segments: int) -> list[torch.Tensor]:
    return [tensors[f"text.{i}"] for i in range(num_segments)]
