"""One error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Routes raise `ApiError`; FastAPI's own errors (validation, unknown route, body too large,
unparsable form) are mapped onto the same shape here, so a client never sees another format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

RETRY_AFTER_NOT_READY_S = 5  # loading or reloading takes seconds
RETRY_AFTER_OVERLOADED_S = 1  # a queue drains quickly

# Codes for errors that arrive as a bare HTTP status (from FastAPI/Starlette or a pipeline stage).
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_field",
    503: "unavailable",
    504: "timeout",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# For the OpenAPI schema of every route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Unusable input (audio that cannot be read, malformed JSON, unsupported format)",
        401: "Missing or unknown API key",
        404: "Unknown voice",
        413: "Request body larger than limits.max_upload_bytes",
        422: "Missing or invalid field",
        503: "Not ready or at capacity: retry after Retry-After seconds",
        504: "Not finished within limits.request_timeout_seconds",
    }.items()
}


class ApiError(Exception):
    """A request that cannot be served; the message tells the client what to change."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @classmethod
    def from_status(cls, status: int, message: str) -> ApiError:
        """An error reported only by its HTTP status (a pipeline stage's `RequestFailed`)."""
        if status == 503:
            return unavailable(message)
        if status not in _STATUS_CODES:
            status = 500
        return cls(status, _STATUS_CODES.get(status, "internal_error"), message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unavailable(message: str, *, retry_after_s: int = RETRY_AFTER_OVERLOADED_S, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, message, {"Retry-After": str(retry_after_s)})


def validation_error(errors: Sequence[Any]) -> ApiError:
    """One readable error for pydantic's error list (FastAPI's request validation, our own models)."""
    problems = []
    for error in errors:
        field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "form"))
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "malformed JSON")
            return ApiError(400, "invalid_json", f"the message is not valid JSON ({detail})")
        if error.get("type") == "missing":
            problems.append(f"{field} is required")
        else:
            problems.append(f"{field}: {error.get('msg', 'invalid value')} (got {error.get('input')!r})")
    code = "missing_field" if all(e.get("type") == "missing" for e in errors) else "invalid_field"
    return ApiError(422, code, "; ".join(problems) or "invalid request")


def install_error_handlers(
    app: FastAPI, *, max_upload_bytes: int, on_error: Callable[[Request, ApiError], None]
) -> None:
    """Map every exception onto the error shape; `on_error` sees each one (metrics, accounting)."""

    def respond(request: Request, error: ApiError) -> JSONResponse:
        on_error(request, error)
        return error.response()

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc)

    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            message = (
                f"the request body is larger than {max_upload_bytes} bytes (limits.max_upload_bytes); "
                "send a shorter prompt recording"
            )
        else:
            message = str(exc.detail)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return respond(request, ApiError(exc.status_code, code, message, exc.headers))

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(request, validation_error(exc.errors()))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        message = "internal server error; the details are in the service log"
        return respond(request, ApiError(500, "internal_error", message))

    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)
