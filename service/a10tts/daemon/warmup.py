"""The warm-up synthesis: one short streaming request through the real HTTP path.

READY=1 waits for it, so "active" means a request has gone HTTP -> encode -> LM -> decode ->
HTTP on this very configuration. HTTP workers refuse synthesis while the service is not ready;
they let this one through when it carries `X-A10TTS-Warmup: <token>`, the token being the
content of `<runtime dir>/warmup.token` (mode 0600, written by the supervisor before any child
starts), so no other client can skip the readiness gate.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import math
import os
import secrets
import time
import uuid
import wave
from pathlib import Path

log = logging.getLogger(__name__)

WARMUP_HEADER = "X-A10TTS-Warmup"
TOKEN_FILE = "warmup.token"
PATH = "/inference_zero_shot"
TEXT = "Ready."
PROMPT_TEXT = "This is a warm up."
SAMPLE_RATE = 24000
TIMEOUT_S, ATTEMPTS = 120.0, 3


class WarmupError(RuntimeError):
    pass


def write_token(runtime_dir: Path) -> str:
    token = secrets.token_hex(16)
    path = runtime_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)
    return token


def read_token(runtime_dir: Path) -> str:
    """For HTTP workers: the token that lets the supervisor's warm-up past the readiness gate."""
    return (runtime_dir / TOKEN_FILE).read_text().strip()


def prompt_wav(seconds: float = 2.0) -> bytes:
    """A voiced, amplitude-modulated tone: enough for every prompt feature extractor."""
    frames = bytearray()
    for n in range(int(seconds * SAMPLE_RATE)):
        t = n / SAMPLE_RATE
        value = 0.3 * math.sin(2 * math.pi * 160 * t) * (0.6 + 0.4 * math.sin(2 * math.pi * 3 * t))
        frames += int(value * 32767).to_bytes(2, "little", signed=True)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(bytes(frames))
    return out.getvalue()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: audio/wav\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def run(port: int, token: str, timeout_s: float) -> tuple[int, float]:
    """POST a streaming request to 127.0.0.1:port; return (PCM bytes, seconds to first audio).

    Raises WarmupError with what went wrong (status and body, or the socket error).
    """
    body, content_type = _multipart(
        {"tts_text": TEXT, "prompt_text": PROMPT_TEXT, "stream": "true"},
        {"prompt_wav": ("warmup.wav", prompt_wav())},
    )
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("POST", PATH, body, {"Content-Type": content_type, WARMUP_HEADER: token})
        response = connection.getresponse()
        if response.status != 200:
            detail = response.read(2000).decode("utf-8", "replace")
            raise WarmupError(f"warm-up request got HTTP {response.status}: {detail}")
        received, first = 0, None
        while chunk := response.read1(65536):
            first = first if first is not None else time.monotonic() - started
            received += len(chunk)
            if time.monotonic() - started > timeout_s:
                raise WarmupError(f"warm-up request did not finish within {timeout_s:.0f} s")
    except (OSError, http.client.HTTPException) as exc:
        raise WarmupError(f"warm-up request to 127.0.0.1:{port}{PATH} failed: {exc!r}") from exc
    finally:
        connection.close()
    if not received:
        raise WarmupError("warm-up request returned no audio")
    return received, first or 0.0


async def warm_up(port: int, token: str, width: int) -> list[float]:
    """`width` requests at once, tried up to ATTEMPTS times; each one's seconds to first audio."""
    async def attempt() -> list[float]:
        results = await asyncio.gather(*(asyncio.to_thread(run, port, token, TIMEOUT_S) for _ in range(width)))
        return [first for _, first in results]

    for number in range(1, ATTEMPTS):
        try:
            return await attempt()
        except WarmupError as exc:
            log.warning("warm-up attempt %d/%d: %s", number, ATTEMPTS, exc)
            await asyncio.sleep(1.0)
    return await attempt()  # the last one's error goes to the caller
