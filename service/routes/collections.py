"""``GET /v1/collections``: what this server serves, side by side."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import ApiError
from service.schemas import CollectionInfo

router = APIRouter(tags=["collections"])


@router.get("/collections", response_model=list[CollectionInfo], summary="The collections served")
async def list_collections(request: Request) -> list[CollectionInfo]:
    """Every collection, the default first, with its encoder and the size of its served index version."""
    served = getattr(request.app.state, "collections", {})
    if not served:
        raise ApiError(503, "unavailable", "the service is not ready: its encoders and indexes are not loaded")
    default = request.app.state.resources.settings.collection
    return [CollectionInfo.of(name, res, name == default)
            for name, res in sorted(served.items(), key=lambda item: (item[0] != default, item[0]))]
