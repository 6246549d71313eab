"""``POST /v1/items``, ``GET|PATCH|DELETE /v1/items/{id}`` and ``GET /v1/items/{id}/image``."""

from __future__ import annotations

import mimetypes
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from index.catalog import Item
from index.fetch import is_url
from index.shards import is_shard_member, read_member, split_location
from service.deps import ResourcesDep, SettingsDep
from service.errors import ApiError, validation_error
from service.ingest import add_item
from service.keys import AUTH_ERRORS, WriteCaller, require
from service.limits import parse_json_field
from service.schemas import ErrorResponse, ItemOut, MetadataPatch, limit, upload_errors
from service.settings import Settings
from service.state import Resources
from service.uploads import read_upload

router = APIRouter(prefix="/items", tags=["items"], responses=AUTH_ERRORS)
READ = [Depends(require("read"))]

ItemId = Annotated[int, Path(ge=0, le=2**63 - 1, description="catalog id, as in search results")]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "`not_found`"}}


async def served_item(res: Resources, item_id: int) -> Item:
    """The catalog row ``item_id`` if it belongs to the served collection, else a 404."""
    item = await run_in_threadpool(res.catalog.get, item_id)
    if item is None or item.collection != res.settings.collection:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    return item


@router.get("/{item_id}", response_model=ItemOut, summary="One catalog item", responses=_NOT_FOUND,
            dependencies=READ)
async def get_item(item_id: ItemId, res: ResourcesDep) -> ItemOut:
    return ItemOut.of(await served_item(res, item_id))


@router.get(
    "/{item_id}/image", name="item_image", summary="The item's image file", response_class=FileResponse,
    dependencies=READ,
    responses={200: {"content": {"image/*": {}}, "description": "the indexed file's bytes"},
               307: {"description": "the item was indexed from an http(s) URL: go there"}, **_NOT_FOUND},
)
async def get_item_image(item_id: ItemId, res: ResourcesDep) -> Response:
    item = await served_item(res, item_id)
    if is_url(item.source):
        return RedirectResponse(item.source, status_code=307)
    if is_shard_member(item.source):  # indexed from a webdataset shard: read the member out of the tar
        try:
            data = await run_in_threadpool(read_member, item.source)
        except OSError:
            raise ApiError(404, "not_found", f"the image of item {item_id} is no longer in its shard") from None
        media_type = mimetypes.guess_type(split_location(item.source)[1])[0] or "application/octet-stream"
        return Response(data, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
    path = FilePath(item.source)
    if not path.is_absolute() or not await run_in_threadpool(path.is_file):
        raise ApiError(404, "not_found", f"the image file of item {item_id} is no longer there")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


router.add_api_route("/{item_id}/image", get_item_image, methods=["HEAD"], include_in_schema=False,
                     dependencies=READ)


@router.patch("/{item_id}", response_model=ItemOut, summary="Change an item's metadata", responses=_NOT_FOUND)
async def patch_item(item_id: ItemId, body: MetadataPatch, res: ResourcesDep, caller: WriteCaller) -> ItemOut:
    """Merge `metadata` into the item's metadata; a key set to null is removed. Needs the write scope."""
    item = await run_in_threadpool(res.catalog.update_metadata, res.settings.collection, item_id, body.metadata)
    if item is None:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    return ItemOut.of(item)


@router.delete("/{item_id}", status_code=204, response_class=Response, summary="Delete an item",
               responses=_NOT_FOUND)
async def delete_item(item_id: ItemId, res: ResourcesDep, caller: WriteCaller) -> Response:
    """Gone from search and from these routes at once; a new index version without its vector is published a
    moment later. Needs the write scope."""
    deleted = await run_in_threadpool(res.catalog.delete, res.settings.collection, [item_id])
    if not deleted:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    res.unpublished.set()  # the publisher compacts: the next version leaves the vector out
    return Response(status_code=204)


@router.post(
    "", response_model=ItemOut, status_code=201, summary="Add an image",
    responses={
        200: {"model": ItemOut, "description": "the same bytes were already an item: its metadata is updated"},
        **upload_errors(s422="`validation_error`: metadata is not a JSON object"),
    },
)
async def add_image(
    file: Annotated[UploadFile, File(description="the image")],
    res: ResourcesDep,
    settings: SettingsDep,
    caller: WriteCaller,
    response: Response,
    metadata: Annotated[str | None, Form(description="a JSON object stored with the item",
                                         json_schema_extra=limit(maxLength="max_filter_chars"))] = None,
) -> ItemOut:
    """Store the image, embed it and add it to the catalog: searchable by the next query, and in the next
    published index version a moment later. Needs the write scope."""
    meta = _metadata(metadata, settings)
    data, image = await read_upload(file, settings)
    vector = await res.image_batcher.submit(image)
    item_id, created = await run_in_threadpool(add_item, res, data, image, vector, meta)
    response.status_code = 201 if created else 200
    return ItemOut.of(await served_item(res, item_id))


def _metadata(text: str | None, settings: Settings) -> dict:
    value = parse_json_field(text, settings, ("body", "metadata"), "bad_metadata")  # bounded: service.limits
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise validation_error(("body", "metadata"), "metadata must be a JSON object", "bad_metadata")
    return value
