"""Bounds on work in flight: how long one request may take, and how many run at once.

``TimeoutMiddleware``: past ``request_timeout`` seconds without a response, a 503 ``timeout``.
The request's task is cancelled (a query waiting for the encoder leaves its batch; work
already running in a thread finishes there, unseen). A response that has started streaming
is never interrupted by this limit; a request that fails (a bug) gets its 500 at once.

``ConcurrencyLimitMiddleware``: past ``max_concurrent_requests`` requests in flight, the next
one gets a 503 ``overloaded`` with ``Retry-After`` at once, instead of waiting in a queue
without end. Probes are not counted, so that monitoring still sees an overloaded server.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response


class TimeoutMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_marking(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_marking))
        waiter = asyncio.ensure_future(started.wait())
        # Whichever comes first: the response starts, or the request fails before it does (a bug: the
        # 500 must go out at once, not when the limit runs out), or the limit.
        try:
            await asyncio.wait({task, waiter}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is shutting the connection down: stop the work too
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if not task.done() and not started.is_set():
            task.cancel()
            response = error_response(503, "timeout", f"the request took longer than the server's limit of "
                                      f"{self.seconds:g} s", headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        await task  # the response is under way (or done, or failed: its error propagates)


PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class ConcurrencyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int, retry_after: int = 1) -> None:
        self.app, self.limit, self.retry_after = app, limit, retry_after
        self.in_flight = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            response = error_response(503, "overloaded", f"the server is working on {self.in_flight} requests, its "
                                      f"limit; retry in {self.retry_after} s",
                                      headers={"Retry-After": str(self.retry_after)})
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
