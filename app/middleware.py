"""Pure-ASGI middleware: request ids, request metrics, the last-resort 500, shutdown 503s, body limits.

Pure ASGI (not BaseHTTPMiddleware) so bodies stream through untouched and the size cap can stop a
request while its body is still arriving.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import INTERNAL, PROBLEMS, REQUEST_ID_HEADER, headers_for, kind_of, problem_response
from app.exceptions import RequestTimeout, RequestTooLarge, ShuttingDown
from app.ids import REQUEST_ID
from app.lifecycle import Lifecycle
from app.metrics import Metrics

log = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Gives every request an id (the client's X-Request-ID if sane), echoes it on every response,
    counts the request, turns an unhandled exception into a problem+json 500 logged under that id, and
    answers a request still running when the shutdown grace ends with a 503 problem (`Lifecycle`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, lifecycle: Lifecycle) -> None:
        self.app = app
        self.metrics = metrics
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
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
            with anyio.CancelScope() as in_flight:
                self.lifecycle.admit(in_flight)
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception:
                    log.exception(
                        "unhandled error [request_id=%s] %s %s", request_id, scope["method"], scope["path"]
                    )
                    if response_started:
                        raise
                    status = 500
                    response = problem_response(
                        INTERNAL, "internal error", instance=scope["path"], request_id=request_id
                    )
                    await response(scope, receive, send)
                finally:
                    self.lifecycle.release(in_flight)
            if in_flight.cancelled_caught and not response_started:
                # the shutdown grace is over: a problem the client can act on (retry elsewhere), not
                # the bare 500 that uvicorn's own cancellation sends
                log.warning("request cut by shutdown [request_id=%s] %s", request_id, scope["path"])
                exc = ShuttingDown("the service is shutting down; retry (on another replica)")
                kind = PROBLEMS[ShuttingDown]
                status = kind.status
                response = problem_response(
                    kind,
                    str(exc),
                    instance=scope["path"],
                    request_id=request_id,
                    headers={**headers_for(kind), "Connection": "close"},
                )
                await response(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)


class BodyLimitsMiddleware:
    """Refuses bodies over `max_bytes`: by Content-Length before reading, and by counting as it streams
    (chunked uploads, lying clients); either way a 413 problem+json. Refuses bodies that arrive too
    slowly: each read must come within `timeout_s` of the request's start plus 1 s per `min_rate` bytes
    received so far (a slow link with a big upload keeps extending its deadline; a client trickling a
    few bytes does not), else a 408 problem+json."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, min_rate: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = time.monotonic()
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: nothing to time
                return await receive()
            deadline = started + self.timeout_s + received / self.min_rate
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RequestTimeout(self.timeout_s, self.min_rate) from None  # 408 by the error table
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)  # mapped to 413 by the error table
            return message

        await self.app(scope, limited_receive, send)

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
