"""Pure-ASGI middleware: request ids, request metrics, the last-resort 500, and the body-size cap.

Pure ASGI (not BaseHTTPMiddleware) so bodies stream through untouched and the size cap can stop a
request while its body is still arriving.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import INTERNAL, REQUEST_ID_HEADER, kind_of, problem_response
from app.exceptions import RequestTooLarge
from app.metrics import Metrics

log = logging.getLogger(__name__)

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Gives every request an id (the client's X-Request-ID if sane), echoes it on every response,
    counts the request, and turns an unhandled exception into a problem+json 500 logged under that id."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = incoming if _CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":  # the stream names its messages after this id; it counts them
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error [request_id=%s] %s %s", request_id, scope["method"], scope["path"])
            if response_started:
                raise
            status = 500
            response = problem_response(
                INTERNAL, "internal error", instance=scope["path"], request_id=request_id
            )
            await response(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes`: by Content-Length before reading, and by counting as it streams
    (chunked uploads, lying clients). Either way the client gets a 413 problem+json."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)  # mapped to 413 by the error table
            return message

        await self.app(scope, capped_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = RequestTooLarge(self.max_bytes)
        kind = kind_of(exc)
        assert kind is not None
        request_id: Any = scope.get("state", {}).get("request_id", "")
        response = problem_response(
            kind,
            str(exc),
            instance=Request(scope).url.path,
            request_id=str(request_id),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
