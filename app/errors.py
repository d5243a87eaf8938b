"""One error envelope (RFC 9457 `application/problem+json`) and one table from exceptions to statuses.

Every 4xx/5xx leaves through here: domain exceptions, FastAPI validation errors (built from
`exc.errors()`, never `str(exc)`), Starlette's 404/405, and unexpected errors, which become a bare 500
that names only the request id (the details go to the log under that id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.websockets import WebSocket

from app.exceptions import (
    ContextUnavailable,
    ConversationNotFound,
    RequestTimeout,
    RequestTooLarge,
    ServiceNotReady,
    ShuttingDown,
    StoreUnavailable,
    TruncatedAudio,
    Unauthorized,
    UnsupportedMediaType,
    UnsupportedModality,
    UtteranceConflict,
    UtteranceInProgress,
)
from model.encoders.audio import (
    AudioDecodeError,
    AudioOutOfBoundsError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    UndecodableAudioError,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://lpgnet.example/problems/"  # `type` URIs: identifiers, not necessarily pages
REQUEST_ID_HEADER = "X-Request-ID"


class ProblemKind(NamedTuple):
    status: int
    slug: str  # the tail of the `type` URI
    title: str


# The one table from exception type to response; the most specific class in the MRO wins.
PROBLEMS: dict[type[Exception], ProblemKind] = {
    ConversationNotFound: ProblemKind(404, "conversation-not-found", "Conversation not found"),
    UtteranceConflict: ProblemKind(409, "utterance-conflict", "Utterance id reused with other content"),
    UtteranceInProgress: ProblemKind(409, "utterance-in-progress", "Utterance still in progress"),
    UnsupportedModality: ProblemKind(422, "unsupported-modality", "No modality this model uses"),
    UnsupportedMediaType: ProblemKind(415, "unsupported-media-type", "Unsupported media type"),
    RequestTooLarge: ProblemKind(413, "request-too-large", "Request too large"),
    RequestTimeout: ProblemKind(408, "request-timeout", "Request body too slow"),
    AudioTooLongError: ProblemKind(413, "audio-too-long", "Audio too long"),
    AudioTooLargeError: ProblemKind(413, "audio-too-large", "Audio too large"),
    AudioTooShortError: ProblemKind(422, "audio-too-short", "Audio too short"),
    AudioOutOfBoundsError: ProblemKind(422, "audio-out-of-bounds", "Audio rate or channels out of bounds"),
    UndecodableAudioError: ProblemKind(415, "undecodable-audio", "Audio format not readable"),
    TruncatedAudio: ProblemKind(422, "truncated-audio", "Truncated audio"),
    AudioDecodeError: ProblemKind(422, "invalid-audio", "Invalid audio"),
    Unauthorized: ProblemKind(401, "unauthorized", "Unauthorized"),
    ServiceNotReady: ProblemKind(503, "not-ready", "Service not ready"),
    ShuttingDown: ProblemKind(503, "shutting-down", "Service shutting down"),
    StoreUnavailable: ProblemKind(503, "store-unavailable", "Conversation store unavailable"),
    ContextUnavailable: ProblemKind(503, "context-unavailable", "Context unavailable"),
}
INTERNAL = ProblemKind(500, "internal", "Internal server error")
VALIDATION = ProblemKind(422, "validation-error", "Request validation failed")


def kind_of(exc: BaseException) -> ProblemKind | None:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return None


def request_id_of(request: HTTPConnection) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def problem_body(
    kind: ProblemKind, detail: str, *, instance: str | None = None, request_id: str = "", **extra: Any
) -> dict[str, Any]:
    """The problem+json document (HTTP responses and WebSocket messages carry the same one)."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind.slug, "title": kind.title, "status": kind.status}
    body["detail"] = detail
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return body


def problem_of(exc: BaseException) -> tuple[ProblemKind, str, dict[str, Any]]:
    """Kind, detail and extra members of the problem that answers `exc`: the one mapping that HTTP
    handlers and the WebSocket stream share. Unknown exceptions are a bare 500 (log them first)."""
    if isinstance(exc, RequestValidationError | WebSocketRequestValidationError):
        errors = validation_errors(exc.errors())
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return VALIDATION, detail, {"errors": errors}
    kind = kind_of(exc)
    if kind is None:
        return INTERNAL, "internal error", {}
    return kind, str(exc), {}


def problem_response(
    kind: ProblemKind,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str = "",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(kind, detail, instance=instance, request_id=request_id, **extra)
    all_headers = dict(headers or {})
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body, status_code=kind.status, headers=all_headers, media_type=PROBLEM_JSON)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic/FastAPI errors without `input`/`ctx`/`url`: those can echo the payload back."""
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def headers_for(kind: ProblemKind) -> dict[str, str]:
    """The headers a status needs besides the envelope's."""
    if kind.status == 401:
        return {"WWW-Authenticate": 'Bearer realm="lpgnet"'}
    if kind.status == 503:
        return {"Retry-After": "1"}
    if kind in (PROBLEMS[RequestTimeout], PROBLEMS[RequestTooLarge]):
        return {"Connection": "close"}  # the body was not read to its end: the connection cannot be reused
    return {}


def exception_response(conn: HTTPConnection, exc: BaseException) -> JSONResponse:
    """The problem+json response for `exc` (a WebSocket handshake is refused with it too)."""
    kind, detail, extra = problem_of(exc)
    return problem_response(
        kind,
        detail,
        instance=conn.url.path,
        request_id=request_id_of(conn),
        headers=headers_for(kind),
        **extra,
    )


async def refuse_websocket(websocket: WebSocket, exc: BaseException) -> None:
    """Refuse a WebSocket handshake with the HTTP problem the same request would get as a POST.

    Needs the server's denial-response extension (uvicorn, Starlette's TestClient); without it the
    handshake is closed with 1008 (policy violation), which the client sees as an HTTP 403."""
    try:
        await websocket.send_denial_response(exception_response(websocket, exc))
    except RuntimeError:
        await websocket.close(code=1008)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    return exception_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return exception_response(request, exc)


async def _websocket_validation_error(websocket: WebSocket, exc: Exception) -> None:
    await refuse_websocket(websocket, exc)  # a bad conversation id in the stream's path: 422


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = _phrase(exc.status_code)
    kind = ProblemKind(exc.status_code, phrase.lower().replace(" ", "-"), phrase)
    # Starlette's own details ("Not Found", multipart limits) are fixed strings, safe to pass on.
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(
        kind, detail, instance=request.url.path, request_id=request_id_of(request), headers=headers
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette's 405 names only the first route's."""
    routes = request.app.router.routes
    return [
        method
        for method in ("DELETE", "GET", "PATCH", "POST", "PUT")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install_error_handlers(app: FastAPI) -> None:
    """Route every known error type through the envelope (500s: see `app.middleware`)."""
    for exc_type in PROBLEMS:
        app.add_exception_handler(exc_type, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WebSocketRequestValidationError, _websocket_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
