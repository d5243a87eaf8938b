"""Running the app on uvicorn the way `lpgnet serve` does: connection timeouts and graceful shutdown.

uvicorn alone keeps a connection that never sends a request open forever (its keep-alive timer starts
only after a first response), lets request heads trickle in without a deadline, and, when its shutdown
timeout expires, cancels the requests still running with a bare `500 text/plain`. Here:

- `TimedH11Protocol`: a connection must deliver a complete request head within `idle_timeout_s` of
  opening or of its previous response, else it is closed (slow bodies: `BodyLimitsMiddleware`);
- `GracefulServer`: on SIGTERM/SIGINT, /ready turns 503 at once (`Lifecycle.drain`), the port keeps
  accepting for `shutdown_drain_s`, then closes; requests in flight get `shutdown_grace_s` to finish,
  and those still running get a 503 problem with Retry-After (`Lifecycle.expire`). uvicorn's own
  timeout is set past that, so its bare 500 never comes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.api.routes.streams import server_options
from app.lifecycle import Lifecycle
from app.main import create_app
from app.settings import Settings

log = logging.getLogger(__name__)

# uvicorn's own shutdown timeout, past the grace: time for the 503s to be written and connections closed
_UVICORN_MARGIN_S = 5.0


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (idle and slow-header connections)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._timed_cycle:  # a request head arrived
            self._timed_cycle = self.cycle
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is self._timed_cycle:  # nothing pipelined
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        # no request to answer: close, as uvicorn's keep-alive timeout does
        if self.conn.our_state not in (h11.ERROR, h11.CLOSED, h11.MUST_CLOSE):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first exit signal drains (/ready 503), then stops; see the module doc."""

    def __init__(
        self, config: uvicorn.Config, lifecycle: Lifecycle, *, drain_s: float, grace_s: float
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_s = drain_s
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # a Python signal handler: it runs between two bytecodes of the loop's thread, so it only
        # schedules work on the loop
        if self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        if self.lifecycle.draining:  # a second signal during the drain: stop now
            self._loop.call_soon_threadsafe(self._stop, sig)
            return
        self.lifecycle.drain()
        log.info("shutting down: not ready; closing the port in %.1f s", self.drain_s)
        self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_s, self._stop, sig)

    def _stop(self, sig: int) -> None:
        if self.should_exit:
            return
        super().handle_exit(sig, None)  # uvicorn closes the port and waits for requests in flight
        assert self._loop is not None
        self._loop.call_later(self.grace_s, self.lifecycle.expire)


def build_server(settings: Settings) -> GracefulServer:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=TimedH11Protocol,
        timeout_keep_alive=settings.idle_timeout_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=int(settings.shutdown_grace_s + _UVICORN_MARGIN_S),
        **server_options(settings),
    )
    lifecycle: Lifecycle = app.state.services.lifecycle
    return GracefulServer(
        config, lifecycle, drain_s=settings.shutdown_drain_s, grace_s=settings.shutdown_grace_s
    )


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (blocking)."""
    build_server(settings).run()
