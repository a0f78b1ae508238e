"""The service over HTTP: readiness, the /v1/status document, and an active TTFA probe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from a10tts.daemon.warmup import prompt_wav  # stdlib only: a short voiced tone as a WAV

# The probe measures time to first audio, not quality: any valid prompt serves.
PROBE_TEXT = "Hello, this is a latency probe."
PROMPT_TEXT = "This is a short prompt for a latency probe."


@dataclass(frozen=True)
class ServerSnapshot:
    url: str
    reachable: bool
    ready: bool = False
    status: dict[str, Any] | None = None  # /v1/status (docs/dev/service-contracts.md)
    error: str = ""  # why the service could not be read, for the operator
    at: float = field(default_factory=time.time)  # also makes every poll a change the panels see

    def get(self, *path: str) -> Any:
        """A field of the status document, None when it (or the document) is missing."""
        value: Any = self.status
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


@dataclass(frozen=True)
class ProbeResult:
    ttfa_s: float | None  # client-side: request sent -> first audio bytes received
    error: str = ""
    at: float = field(default_factory=time.time)


class ServerClient:
    def __init__(self, url: str, timeout_s: float = 2.0, probe_timeout_s: float = 60.0):
        self.url = url.rstrip("/")
        self._timeout = timeout_s
        self._probe_timeout = probe_timeout_s
        self._prompt: bytes | None = None

    def read(self) -> ServerSnapshot:
        try:
            with self._client(self._timeout) as client:
                ready = client.get("/readyz").status_code == 200
                response = client.get("/v1/status")
        except httpx.HTTPError as exc:
            return ServerSnapshot(self.url, reachable=False, error=explain(exc, self.url))
        if response.status_code != 200:
            return ServerSnapshot(self.url, True, ready, error=f"/v1/status answered {_answer(response)}")
        try:
            status = response.json()
        except ValueError:
            return ServerSnapshot(self.url, True, ready, error="/v1/status did not return JSON: "
                                                               "is another program listening on this port?")
        if not isinstance(status, dict):
            return ServerSnapshot(self.url, True, ready,
                                  error="/v1/status returned JSON that is not an object")
        return ServerSnapshot(self.url, True, ready, status)

    def _client(self, timeout_s: float) -> httpx.Client:
        # No proxy from the environment: the service is on this host.
        return httpx.Client(base_url=self.url, timeout=timeout_s, trust_env=False)

    def probe(self) -> ProbeResult:
        """One short streaming zero-shot request; stops reading at the first audio bytes."""
        if self._prompt is None:
            self._prompt = prompt_wav()
        data = {"tts_text": PROBE_TEXT, "prompt_text": PROMPT_TEXT, "stream": "true"}
        files = {"prompt_wav": ("probe.wav", self._prompt, "audio/wav")}
        try:
            with self._client(self._probe_timeout) as client:
                start = time.perf_counter()
                with client.stream("POST", "/inference_zero_shot", data=data, files=files) as response:
                    if response.status_code != 200:
                        response.read()
                        return ProbeResult(None, f"the service answered {_answer(response)}")
                    for chunk in response.iter_raw():
                        if chunk:
                            # Closing the stream here cancels the rest of the synthesis.
                            return ProbeResult(time.perf_counter() - start)
        except httpx.HTTPError as exc:
            return ProbeResult(None, explain(exc, self.url))
        return ProbeResult(None, "the service ended the stream without any audio")


def explain(exc: httpx.HTTPError, url: str) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url} ({exc}): the service is not running or still starting"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time: the service is busy or hung"
    return f"{url}: {type(exc).__name__}: {exc}"


def _answer(response: httpx.Response) -> str:
    """`503: model is loading` from the JSON message the API returns with every error."""
    try:
        body = response.json()
        message = body.get("message") or body.get("detail") or body.get("error")
    except (ValueError, AttributeError):
        message = None
    if message:
        return f"{response.status_code}: {message}"
    return f"{response.status_code} {response.reason_phrase}"
