"""``create_app(settings)``: the FastAPI application, its lifespan, routers and error handlers."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.body_limit import BodyLimitMiddleware, JsonLimitMiddleware
from service.errors import install_error_handlers
from service.keys import RateLimiter
from service.observability import install_observability
from service.openapi import install_openapi
from service.routes import about, classify, health, items, search
from service.routes import collections as collections_routes
from service.schemas import API_PREFIX, ErrorResponse
from service.settings import Settings
from service.state import Resources
from service.timeout import ConcurrencyLimitMiddleware, TimeoutMiddleware
from service.web import mount_web

log = logging.getLogger(__name__)

DESCRIPTION = """\
Search an image collection by text or by example, and classify images into labels
that nobody trained the encoder on (zero-shot). Every error is JSON of the form
`{"error": {"code": ..., "message": ..., "detail": ...}}`.
"""


def _version() -> str:
    try:
        return importlib.metadata.version("lookalike")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


async def _watch_versions(resources: Resources, interval: float) -> None:
    """Pick up newly published index versions every ``interval`` seconds (off the event loop)."""
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(resources.reload_if_published)
        except Exception:  # never let the watcher die: the next round tries again
            log.exception("checking for a new index version failed")


async def _publish_uploads(resources: Resources, delay: float) -> None:
    """After uploads, publish a new index version (one per burst: ``delay`` seconds after the first)."""
    while True:
        while not resources.unpublished.is_set():
            await asyncio.sleep(0.1)
        await asyncio.sleep(delay)
        resources.unpublished.clear()
        try:
            await run_in_threadpool(resources.publish_uploads)
        except Exception:  # the uploads are in the catalog; the next upload (or the indexer) publishes them
            log.exception("publishing uploaded items failed")


def create_app(settings: Settings | None = None, *, resources: Resources | None = None,
               collections: dict[str, Resources] | None = None) -> FastAPI:
    """The service for ``settings`` (default: from ``LOOKALIKE_*``).

    Encoder, index and catalog of the default collection (and of every entry of
    ``settings.extra_collections``) are loaded in the lifespan, or taken from ``resources``
    (and ``collections``) when the caller has loaded them already; they then stay the caller's
    to close.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = resources is None
        default = await run_in_threadpool(Resources.load, settings) if owned else resources
        served = {settings.collection: default}
        try:
            for name in settings.extra_collections:
                served[name] = ((collections or {}).get(name)
                                or await run_in_threadpool(Resources.load, settings.for_collection(name)))
        except BaseException:
            if owned:
                for res in served.values():
                    res.close()
            raise
        tasks = []
        for res in served.values():
            res.image_batcher.on_batch = metrics.batch_size.labels("images").observe
            if res.text_batcher is not None:
                res.text_batcher.on_batch = metrics.batch_size.labels("texts").observe
            tasks += [asyncio.create_task(_watch_versions(res, settings.reload_interval)),
                      asyncio.create_task(_publish_uploads(res, settings.publish_delay))]
        app.state.resources, app.state.collections = default, served
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            app.state.resources, app.state.collections = None, {}
            if owned:
                for res in served.values():
                    res.close()

    app = FastAPI(
        title="lookalike",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={404: {"model": ErrorResponse, "description": "`not_found`"}},
        # multipart parsing stops at what a request can use: one file, the labels and templates, and text
        # fields no longer than a JSON field may be (UTF-8: at most 4 bytes a character)
        form_limits={"max_files": 1, "max_fields": settings.max_labels + settings.max_templates + 8,
                     "max_part_size": 4 * max(settings.max_filter_chars, settings.max_text_chars)},
    )
    app.state.settings = settings
    app.state.resources = None
    app.state.collections = {}
    app.state.rate_limiter = RateLimiter()
    install_error_handlers(app)
    # innermost first: JSON shape <- body size <- time <- requests in flight <- metrics and request ids
    app.add_middleware(JsonLimitMiddleware, settings=settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.max_concurrent_requests)
    metrics = install_observability(app)  # outermost: times and ids every response, errors included
    for router in (search.router, classify.router, items.router, collections_routes.router, about.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router)
    mount_web(app)
    install_openapi(app, settings)
    return app
