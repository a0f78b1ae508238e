"""The FastAPI application of one HTTP worker: routes, error shape, authentication, accounting."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from .. import __version__
from ..config import Config
from ..voices import VoiceRegistry
from .auth import ApiKeyAuth, ApiKeys, WarmupToken
from .errors import ApiError, install_error_handlers
from .middleware import ArrivalStamp, BodyLimit
from .routes import bistream, health, lighttts, openai, voices
from .state import SYNTHESIS_TAG, ApiState
from .synthesis import Pipeline, Synthesizer, arrival_of, new_request_id

DESCRIPTION = """\
CosyVoice2 text-to-speech. LightTTS-compatible routes (`/inference_*`, multipart in, raw
16-bit little-endian mono 24 kHz PCM out), an OpenAI-style `/v1/audio/speech` with a voice
registry, probes and metrics. Errors are `{"error": {"code": ..., "message": ...}}`.
See docs/api.md."""


def create_app(
    config: Config,
    pipeline: Pipeline,
    voice_registry: VoiceRegistry,
    *,
    worker_index: int = 0,
    warmup: WarmupToken | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
) -> FastAPI:
    warmup = warmup or WarmupToken(None)
    synthesizer = Synthesizer(
        pipeline,
        worker_index=worker_index,
        limits=config.limits,
        max_running_requests=config.llm.max_running_requests,
    )
    app = FastAPI(
        title="a10tts",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.api = ApiState(config, synthesizer, voice_registry, warmup)

    def account_refused(request: Request, error: ApiError) -> None:
        """A synthesis request refused before it reached the pipeline still counts."""
        if SYNTHESIS_TAG in getattr(request.scope.get("route"), "tags", ()):
            synthesizer.record(new_request_id(), error.status, arrival_of(request.scope), None, 0)

    install_error_handlers(app, max_upload_bytes=config.limits.max_upload_bytes, on_error=account_refused)
    for module in (lighttts, bistream, openai, voices, health):
        app.include_router(module.router)
    if config.server.api_keys_file:
        app.add_middleware(ApiKeyAuth, keys=ApiKeys(Path(config.server.api_keys_file)), warmup=warmup)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_upload_bytes)
    app.add_middleware(ArrivalStamp)  # added last: runs first, before the body is read
    return app
