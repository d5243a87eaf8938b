"""Where the process is in its life, for the requests in flight: serving, draining, or past its grace.

`app.server` moves it along on SIGTERM: `drain()` turns /ready to 503 (load balancers stop sending),
then, once the port has closed and `shutdown_grace_s` has passed, `expire()` cancels every request
still running; `RequestContextMiddleware` answers each with a 503 problem and Retry-After instead of
the bare 500 that uvicorn's own cancellation would send.
"""

from __future__ import annotations

import anyio


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False  # SIGTERM received: not ready any more
        self.expired = False  # the grace period is over: whatever still runs is cancelled
        self._in_flight: set[anyio.CancelScope] = set()

    def drain(self) -> None:
        self.draining = True

    def expire(self) -> None:
        self.draining = self.expired = True
        for scope in list(self._in_flight):
            scope.cancel()

    def admit(self, scope: anyio.CancelScope) -> None:
        """Track a request's cancel scope until `release`; past the grace it is cancelled at once."""
        self._in_flight.add(scope)
        if self.expired:
            scope.cancel()

    def release(self, scope: anyio.CancelScope) -> None:
        self._in_flight.discard(scope)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
