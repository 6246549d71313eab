"""FastAPI dependencies: what a route may ask for, read from ``request.app.state``.

They are ``async def`` on purpose: they never block, and FastAPI runs a plain ``def``
dependency in its thread pool, one hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.errors import ApiError
from service.settings import Settings
from service.state import Resources


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_resources(
    request: Request,
    collection: Annotated[str | None, Query(description="which collection to use (default: the server's "
                                                        "default collection; see GET /v1/collections)")] = None,
) -> Resources:
    resources = getattr(request.app.state, "resources", None)
    if resources is None:  # only between a failed/finished lifespan and the last request
        raise ApiError(503, "unavailable", "the service is not ready: its encoder and index are not loaded")
    if collection is None or collection == resources.settings.collection:
        return resources
    served = request.app.state.collections
    if collection not in served:
        raise ApiError(404, "unknown_collection", f"no collection {collection!r}; this server has "
                       f"{', '.join(sorted(served))}")
    return served[collection]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]
