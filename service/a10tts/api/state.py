"""What every route of one HTTP worker shares, handed to routes as a FastAPI dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from ..config import Config
from ..voices import VoiceRegistry
from .auth import WarmupToken
from .synthesis import Job, Synthesizer, arrival_of

SYNTHESIS_TAG = "synthesis"  # routes whose requests count in a10tts_requests_total and RequestDone


@dataclass(frozen=True)
class ApiState:
    config: Config
    synthesizer: Synthesizer
    voices: VoiceRegistry
    warmup: WarmupToken

    async def start(self, connection: HTTPConnection, **fields: Any) -> Job:
        """Submit the synthesis that `connection` asked for (fields as in `SynthesisRequest`)."""
        return await self.synthesizer.start(
            arrival_of(connection.scope), warmup=self.warmup.presented_by(connection.headers), **fields
        )


def api_state(connection: HTTPConnection) -> ApiState:
    return connection.app.state.api


State = Annotated[ApiState, Depends(api_state)]
