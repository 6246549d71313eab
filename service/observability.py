"""Operations: Prometheus metrics at ``/metrics`` and one structured log line per request.

Metrics live in a registry of their own per app (two apps in one process, as in tests,
never share counters):

    lookalike_http_request_duration_seconds{method, route, status}   histogram
    lookalike_encoder_batch_size{input}                               histogram (texts / images per call)
    lookalike_index_vectors                                           gauge (the served version)
    lookalike_catalog_items                                           gauge (live items, read at scrape time)

``route`` is the route's path template (``/v1/items/{item_id}``), never the raw path, so
the label set stays small. Every response carries ``X-Request-ID`` (the caller's, when it
sends a sane one, else a new one); the request log line is JSON with the same id.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("service.requests")

REQUEST_ID = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("lookalike_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route", "status"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.batch_size = Histogram("lookalike_encoder_batch_size", "inputs per encoder call", ["input"],
                                    registry=self.registry, buckets=BATCH_BUCKETS)
        self.index_vectors = Gauge("lookalike_index_vectors", "vectors in the served index version",
                                   registry=self.registry)
        self.catalog_items = Gauge("lookalike_catalog_items", "live items of the served collection",
                                   registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMiddleware:
    """Times every request, labels it with its route template, and logs it with a request id (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, mounts: Callable[[], Iterable[str]] = tuple) -> None:
        self.app, self.metrics, self.mounts = app, metrics, mounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or {}).get(REQUEST_ID.encode(), b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            template = route_template(scope, self.mounts())
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(seconds)
            log.info(json.dumps({"request_id": request_id, "method": scope["method"], "path": scope["path"],
                                 "route": template, "status": status, "ms": round(seconds * 1000, 2)}))


def route_template(scope: Scope, mounts: Iterable[str] = ()) -> str:
    """The matched route's path with its parameters named (``/v1/items/{item_id}``), ``/static/{path}``
    under a mount, and "unmatched" for every other path, so that callers cannot add label values (and
    memory) at will."""
    path = scope["path"]
    if getattr(scope.get("route"), "endpoint", None) is None:
        for prefix in mounts:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return prefix.rstrip("/") + "/{path}"
        return "unmatched"
    names = {str(value): name for name, value in (scope.get("path_params") or {}).items()}
    return "/".join(f"{{{names[part]}}}" if part in names else part for part in path.split("/"))


def install_observability(app: FastAPI) -> Metrics:
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(RequestMiddleware, metrics=metrics,
                       mounts=lambda: [route.path for route in app.routes if isinstance(route, Mount)])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        res = getattr(request.app.state, "resources", None)
        if res is not None:
            metrics.index_vectors.set(res.version.count)
            metrics.catalog_items.set(await run_in_threadpool(res.catalog.count, res.settings.collection))
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics
