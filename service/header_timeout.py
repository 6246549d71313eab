"""A time limit on receiving a request's headers, which uvicorn does not have by itself.

Without it a client that sends one header byte a minute holds a connection (and a slot of
``limit_concurrency``) for as long as it likes. With it, the connection is closed when a
request's headers are not complete ``header_timeout`` seconds after the connection opened or
the previous response finished. Idle keep-alive connections close earlier, at uvicorn's
``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout = 10.0  # seconds; ``protocol_with_header_timeout`` makes a class with another value

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        busy = (self.cycle is not None and not self.cycle.response_complete) or self.pipeline
        if not busy and not self.transport.is_closing():  # a pipelined request's headers are already in
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # for the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})
