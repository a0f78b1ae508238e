"""Closed-loop HTTP load: `concurrency` clients, each sending its next request when one ends.

Per request it records the client-side time to first audio byte, the total time, the audio
received, the worst playback lag: how far behind a listener who starts playing at the first byte
any chunk arrived (0 = the stream never stalled), and where the server says the TTFA went.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .corpus import SENTENCES, Prompt
from .phases import server_timing_ms

SAMPLE_RATE = 24000
BYTES_PER_SECOND = 2 * SAMPLE_RATE  # int16 mono
SAMPLES_PER_TOKEN = 960  # a CosyVoice2 speech token is 40 ms of 24 kHz audio


@dataclass(frozen=True)
class Target:
    url: str
    api: str = "lighttts"  # "lighttts": multipart /inference_zero_shot; "openai": /v1/audio/speech
    stream: bool = True
    voice: str | None = None  # openai api: a registered voice id or name
    num_tokens: int | None = None  # a10tts only: fixed speech-token count per request
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class Sample:
    concurrency: int
    lang: str
    status: int
    error: str | None
    ttfa_s: float | None
    total_s: float
    audio_s: float
    max_lag_s: float | None
    phases_ms: dict[str, float] | None = None  # the server's account of the TTFA (Server-Timing), if it gives one

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def rtf(self) -> float | None:
        return self.total_s / self.audio_s if self.audio_s else None


def num_tokens_ignored(samples: list[Sample], num_tokens: int) -> str | None:
    """Why the served samples show that the server did not hold each sentence to ``num_tokens``
    tokens (audio that is not a whole number of such sentences), or None if it did."""
    sentence_bytes = 2 * SAMPLES_PER_TOKEN * num_tokens
    for sample in samples:
        received = round(sample.audio_s * BYTES_PER_SECOND)
        if sample.ok and received % sentence_bytes:
            return (f"the server ignored --num-tokens {num_tokens}: a request got {sample.audio_s:.2f} s of audio, "
                    f"not a multiple of {sentence_bytes / BYTES_PER_SECOND:.2f} s; leave --num-tokens out for "
                    "servers without it (lengths then follow the text)")
    return None


def _request(target: Target, text: str, prompt: Prompt) -> dict:
    headers = target.headers
    if target.api == "openai":
        body = {"model": "CosyVoice2-0.5B", "input": text, "voice": target.voice,
                "response_format": "pcm", "stream": target.stream}
        if target.num_tokens:
            body["num_tokens"] = target.num_tokens
        return {"method": "POST", "url": f"{target.url}/v1/audio/speech", "json": body, "headers": headers}
    data = {"tts_text": text, "prompt_text": prompt.text, "stream": str(target.stream).lower()}
    if target.num_tokens:
        data["num_tokens"] = str(target.num_tokens)
    return {"method": "POST", "url": f"{target.url}/inference_zero_shot", "data": data,
            "files": {"prompt_wav": ("prompt.wav", prompt.wav, "audio/wav")}, "headers": headers}


async def one_request(client: httpx.AsyncClient, target: Target, lang: str, text: str, prompt: Prompt,
                      concurrency: int) -> Sample:
    start = time.perf_counter()
    first = None
    received = 0
    max_lag = 0.0
    try:
        async with client.stream(**_request(target, text, prompt)) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")[:200]
                return Sample(concurrency, lang, response.status_code, body, None, time.perf_counter() - start, 0.0, None)
            phases = server_timing_ms(response.headers.get("server-timing"))
            async for chunk in response.aiter_bytes():
                now = time.perf_counter()
                if not chunk:
                    continue
                if first is None:
                    first = now
                # The listener needs these bytes when the audio before them has played out.
                due = first + received / BYTES_PER_SECOND
                max_lag = max(max_lag, now - due)
                received += len(chunk)
    except httpx.HTTPError as exc:
        return Sample(concurrency, lang, 0, f"{type(exc).__name__}: {exc}", None, time.perf_counter() - start, 0.0, None)
    total = time.perf_counter() - start
    error = None if received else "no audio received"
    return Sample(concurrency, lang, 200, error, None if first is None else first - start, total,
                  received / BYTES_PER_SECOND, max_lag if first is not None else None, phases)


async def run_level(target: Target, prompts: dict[str, Prompt], concurrency: int, requests: int,
                    langs: tuple[str, ...], on_done: Callable[[Sample], None] | None = None,
                    timeout: float = 600.0, ramp_up_s: float = 0.0) -> tuple[list[Sample], float]:
    """Send `requests` requests with `concurrency` in flight; returns the samples and the wall
    time from the first measured request to the last.

    With ``ramp_up_s`` the clients start evenly spread over that many seconds, as listeners
    arrive, instead of all at once; each one's first request, sent while the load still builds,
    is not measured.
    """
    jobs = list(itertools.islice(itertools.cycle([(lang, s) for lang in langs for s in SENTENCES[lang]]),
                                 max(requests, concurrency)))
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for job in jobs[:requests]:
        queue.put_nowait(job)
    samples: list[Sample] = []
    measured_from: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        async def client_loop(index: int) -> None:
            if ramp_up_s:
                await asyncio.sleep(index * ramp_up_s / concurrency)
                lang, text = jobs[index]
                await one_request(client, target, lang, text, prompts[lang], concurrency)
            measured_from.append(time.perf_counter())
            while not queue.empty():
                lang, text = queue.get_nowait()
                sample = await one_request(client, target, lang, text, prompts[lang], concurrency)
                samples.append(sample)
                if on_done:
                    on_done(sample)

        await asyncio.gather(*(client_loop(index) for index in range(concurrency)))
        wall = time.perf_counter() - min(measured_from)
    return samples, wall
