"""Probes, metrics and the status document.

`/livez`: this process serves HTTP. `/readyz` (and its alias `/healthz`): the supervisor says
the whole service is ready (model loaded, warm-up passed, no stage restarting); 503 with
`Retry-After` otherwise. `/v1/status` is the supervisor's latest status document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from .. import metrics
from ..errors import ERROR_RESPONSES, RETRY_AFTER_NOT_READY_S, unavailable
from ..state import State

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: ERROR_RESPONSES[503]})
async def readyz(state: State) -> dict[str, str]:
    if error := state.synthesizer.readiness_error():
        raise error
    return {"status": "ready"}


router.add_api_route("/healthz", readyz, methods=["GET"], responses={503: ERROR_RESPONSES[503]})


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/status", responses={503: ERROR_RESPONSES[503]})
async def status(state: State) -> dict[str, Any]:
    """The service's state, load, recent TTFA and stages (what `a10tts-tui` shows)."""
    snapshot = state.synthesizer.pipeline.snapshot
    if snapshot is None:
        raise unavailable(
            "no status from the supervisor yet; retry shortly", retry_after_s=RETRY_AFTER_NOT_READY_S, code="not_ready"
        )
    return snapshot.status
