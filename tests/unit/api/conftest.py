"""Fixtures: the API app on the fake pipeline, through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from a10tts.api.app import create_app
from a10tts.api.auth import WarmupToken
from a10tts.config import Config
from a10tts.voices import VoiceRegistry
from api_fakes import FakePipeline


@pytest.fixture
def pipeline() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def voices(tmp_path: Path) -> VoiceRegistry:
    return VoiceRegistry(tmp_path / "state")


@pytest.fixture
def make_client(pipeline: FakePipeline, voices: VoiceRegistry) -> Iterator[Callable[..., TestClient]]:
    """`make_client(config=Config(...), warmup=...)`: a TestClient on the app with the fake pipeline."""
    clients: list[TestClient] = []

    def make(config: Config | None = None, warmup: str | None = None) -> TestClient:
        app = create_app(config or Config(), pipeline, voices, warmup=WarmupToken(warmup))
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


