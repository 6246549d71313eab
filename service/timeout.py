"""A time limit per request: past ``request_timeout`` seconds without a response, a 503 ``timeout``.

The request's task is cancelled (a query waiting for the encoder leaves its batch; work
already running in a thread finishes there, unseen). A response that has started streaming
is never interrupted by this limit.
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
        try:
            await asyncio.wait_for(started.wait(), self.seconds)
        except asyncio.TimeoutError:
            if not task.done():
                task.cancel()
                response = error_response(503, "timeout", f"the request took longer than the server's limit of "
                                          f"{self.seconds:g} s", headers={"Retry-After": "1"})
                await response(scope, receive, send)
                return
        await task  # the response is under way (or done): let it finish
