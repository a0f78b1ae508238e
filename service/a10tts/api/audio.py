"""What the API sends back: raw PCM or WAV, 16-bit little-endian mono at 24 kHz."""

from __future__ import annotations

import enum
import struct

from .errors import ApiError

SAMPLE_RATE = 24000
SAMPLE_WIDTH = 2  # bytes: int16
CHANNELS = 1
STREAMING_SIZE = 0xFFFFFFFF  # RIFF/data size of a WAV whose length is unknown when the header is sent


class AudioFormat(str, enum.Enum):
    PCM = "pcm"
    WAV = "wav"

    @property
    def media_type(self) -> str:
        # Not audio/L16: RFC 2586 defines L16 as big-endian; we send little-endian like LightTTS.
        return "audio/wav" if self is AudioFormat.WAV else "application/octet-stream"

    @classmethod
    def parse(cls, value: str, field: str) -> AudioFormat:
        try:
            return cls(value.lower())
        except ValueError:
            raise ApiError(
                400,
                "unsupported_format",
                f"{field} {value!r} is not supported; use 'pcm' (raw 16-bit little-endian mono 24 kHz) or 'wav'",
            ) from None


def audio_headers(audio_format: AudioFormat) -> dict[str, str]:
    """Describe the samples for clients reading raw PCM."""
    return {
        "Content-Type": audio_format.media_type,
        "X-Sample-Rate": str(SAMPLE_RATE),
        "X-Sample-Format": "s16le",
        "X-Channels": str(CHANNELS),
    }


def wav_header(data_bytes: int | None) -> bytes:
    """A 44-byte PCM WAV header; `None` (streaming) writes the maximum size as "unknown length"."""
    data_size = STREAMING_SIZE if data_bytes is None else data_bytes
    riff_size = STREAMING_SIZE if data_bytes is None else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,  # fmt chunk size
        1,  # PCM
        CHANNELS,
        SAMPLE_RATE,
        SAMPLE_RATE * SAMPLE_WIDTH * CHANNELS,
        SAMPLE_WIDTH * CHANNELS,
        8 * SAMPLE_WIDTH,
        b"data",
        data_size,
    )


def pcm_seconds(n_bytes: int) -> float:
    return n_bytes / (SAMPLE_RATE * SAMPLE_WIDTH * CHANNELS)
