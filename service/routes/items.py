"""``GET /v1/items/{id}`` and ``GET /v1/items/{id}/image``."""

from __future__ import annotations

import mimetypes
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from index.catalog import Item
from service.deps import ResourcesDep
from service.errors import ApiError
from service.schemas import ErrorResponse, ItemOut
from service.state import Resources

router = APIRouter(prefix="/items", tags=["items"])

ItemId = Annotated[int, Path(ge=0, le=2**63 - 1, description="catalog id, as in search results")]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "`not_found`"}}


async def served_item(res: Resources, item_id: int) -> Item:
    """The catalog row ``item_id`` if it belongs to the served collection, else a 404."""
    item = await run_in_threadpool(res.catalog.get, item_id)
    if item is None or item.collection != res.settings.collection:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    return item


@router.get("/{item_id}", response_model=ItemOut, summary="One catalog item", responses=_NOT_FOUND)
async def get_item(item_id: ItemId, res: ResourcesDep) -> ItemOut:
    return ItemOut.of(await served_item(res, item_id))


@router.get(
    "/{item_id}/image", name="item_image", summary="The item's image file", response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}, "description": "the indexed file's bytes"}, **_NOT_FOUND},
)
async def get_item_image(item_id: ItemId, res: ResourcesDep) -> FileResponse:
    item = await served_item(res, item_id)
    path = FilePath(item.source)
    if not path.is_absolute() or not await run_in_threadpool(path.is_file):
        raise ApiError(404, "not_found", f"the image file of item {item_id} is no longer there")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


router.add_api_route("/{item_id}/image", get_item_image, methods=["HEAD"], include_in_schema=False)
