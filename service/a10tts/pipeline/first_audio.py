"""Where a request's time to first audio goes.

Each stage stamps a wall-clock mark (``time.time()``: all stages run on one host) as the request
passes: the encode stage, the LM, then the decode worker. The first ``AudioChunk`` carries the
marks to the HTTP worker, which adds ``sent`` and records the phases between them in
``a10tts_first_audio_phase_seconds{phase}``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

PHASES = {  # name: (from mark, to mark), in request order
    "encode": ("arrival", "encoded"),  # prompt features (cached per voice) and text ids
    "lm_first_token": ("encoded", "first_token"),  # to the LM, waiting for a slot, prefill
    "first_chunk_tokens": ("first_token", "chunk_sent"),  # LM steps until it has sent the chunk's tokens
    "decode_inbox": ("chunk_sent", "chunk_ready"),  # the decode worker finishing the batch it was vocoding
    "decode_wait": ("chunk_ready", "vocode_start"),  # behind other chunks in the decode worker
    "vocode": ("vocode_start", "vocoded"),  # flow and HiFT of the batch holding the chunk
    "deliver": ("vocoded", "sent"),  # to the HTTP worker and onto the wire
}


def stamp(marks: dict[str, float], name: str) -> dict[str, float]:
    marks[name] = time.time()
    return marks


def phases(marks: Mapping[str, float]) -> dict[str, float]:
    """Seconds of each phase whose two marks are known (clock steps never make one negative)."""
    return {name: max(0.0, marks[end] - marks[start])
            for name, (start, end) in PHASES.items() if start in marks and end in marks}
