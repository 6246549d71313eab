"""``POST /v1/items``, ``GET|PATCH|DELETE /v1/items/{id}`` and ``GET /v1/items/{id}/image``."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Path, Request, Response, UploadFile
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from index.catalog import Item, StaleRevision
from index.fetch import is_url
from index.shards import is_shard_member, read_member, split_location
from service.deps import ResourcesDep, SettingsDep
from service.errors import ApiError, validation_error
from service.files import NotServable, image_type, open_checked, open_item_file
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
IfMatch = Annotated[str | None, Header(description="the item's ETag as last read: the change is made only if the "
                                                   "item has not changed since (else 412)")]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "`not_found`"}}
_STALE = {412: {"model": ErrorResponse, "description": "`precondition_failed`: the item changed since the "
                                                       "`If-Match` ETag was read"}}
FILE_HEADERS = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}


def etag(item: Item) -> str:
    """A strong ETag: the item's id and revision (every change of the row bumps the revision)."""
    return f'"{item.id}-{item.revision}"'


def expected_revision(item_id: int, if_match: str | None) -> int | None:
    """The revision an ``If-Match`` header names (None: no condition); an ETag of another item, or one
    that is no ETag of ours, can never match: 412."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    prefix, _, revision = tag.rpartition("-")
    if prefix != str(item_id) or not revision.isdigit() or len(revision) > 18:
        raise ApiError(412, "precondition_failed", f"If-Match {if_match!r} is not the current ETag of item {item_id}")
    return int(revision)


def stale(item_id: int, exc: StaleRevision) -> ApiError:
    return ApiError(412, "precondition_failed", f"item {item_id} changed since that ETag was read "
                                                f"(it is at revision {exc.revision})", {"revision": exc.revision})


async def served_item(res: Resources, item_id: int) -> Item:
    """The catalog row ``item_id`` if it belongs to the served collection, else a 404."""
    item = await run_in_threadpool(res.catalog.get, item_id)
    if item is None or item.collection != res.settings.collection:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    return item


@router.get("/{item_id}", response_model=ItemOut, summary="One catalog item", responses=_NOT_FOUND,
            dependencies=READ)
async def get_item(item_id: ItemId, res: ResourcesDep, response: Response) -> ItemOut:
    item = await served_item(res, item_id)
    response.headers["ETag"] = etag(item)
    return ItemOut.of(item)


@router.get(
    "/{item_id}/image", name="item_image", summary="The item's image file", response_class=StreamingResponse,
    dependencies=READ,
    responses={200: {"content": {"image/*": {}}, "description": "the indexed file's bytes, typed by what they are"},
               307: {"description": "the item was indexed from an http(s) URL: go there"}, **_NOT_FOUND},
)
async def get_item_image(item_id: ItemId, res: ResourcesDep, request: Request) -> Response:
    """The file's bytes, typed by what they are (``X-Content-Type-Options: nosniff``), if the file still lies
    under the root it was indexed from (or in the upload folder) and is an image; else 404."""
    item = await served_item(res, item_id)
    if is_url(item.source):
        return RedirectResponse(item.source, status_code=307)
    try:
        if is_shard_member(item.source):  # indexed from a webdataset shard: read the member out of the tar
            data, media_type = await run_in_threadpool(_shard_member, item, res)
            return Response(data, media_type=media_type, headers=FILE_HEADERS)
        opened = await run_in_threadpool(open_item_file, item, res.upload_dir)
    except NotServable:
        raise ApiError(404, "not_found", f"the image file of item {item_id} is not available") from None
    headers = {**FILE_HEADERS, "Content-Length": str(opened.size)}
    if request.method == "HEAD":
        opened.file.close()
        return Response(status_code=200, media_type=opened.media_type, headers=headers)
    return StreamingResponse(opened.chunks(), media_type=opened.media_type, headers=headers)


def _shard_member(item: Item, res: Resources) -> tuple[bytes, str]:
    """A shard member's bytes and type, if its shard lies where the item may be served from."""
    open_checked(item, split_location(item.source)[0], res.upload_dir).close()
    try:
        data = read_member(item.source)
    except OSError:
        raise NotServable("no longer in its shard") from None
    return data, image_type(io.BytesIO(data))


router.add_api_route("/{item_id}/image", get_item_image, methods=["HEAD"], include_in_schema=False,
                     dependencies=READ)


@router.patch("/{item_id}", response_model=ItemOut, summary="Change an item's metadata",
              responses={**_NOT_FOUND, **_STALE})
async def patch_item(item_id: ItemId, body: MetadataPatch, res: ResourcesDep, caller: WriteCaller,
                     response: Response, if_match: IfMatch = None) -> ItemOut:
    """Merge `metadata` into the item's metadata; a key set to null is removed. The edit outlives the batch
    job's re-runs: the person's keys win over what the source gives later. With `If-Match: <ETag>`, only
    if the item has not changed since. Needs the write scope."""
    revision = expected_revision(item_id, if_match)
    try:
        item = await run_in_threadpool(res.catalog.update_metadata, res.settings.collection, item_id,
                                       body.metadata, revision)
    except StaleRevision as exc:
        raise stale(item_id, exc) from None
    if item is None:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    response.headers["ETag"] = etag(item)
    return ItemOut.of(item)


@router.delete("/{item_id}", status_code=204, response_class=Response, summary="Delete an item",
               responses={**_NOT_FOUND, **_STALE})
async def delete_item(item_id: ItemId, res: ResourcesDep, caller: WriteCaller, if_match: IfMatch = None) -> Response:
    """Gone from search and from these routes at once; a new index version without its vector is published a
    moment later. It stays deleted when the batch job sees its file again with the same bytes. With
    `If-Match: <ETag>`, only if the item has not changed since. Needs the write scope."""
    revision = expected_revision(item_id, if_match)
    try:
        deleted = await run_in_threadpool(res.catalog.delete, res.settings.collection, [item_id], "user", revision)
    except StaleRevision as exc:
        raise stale(item_id, exc) from None
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
    item = await served_item(res, item_id)
    response.headers["ETag"] = etag(item)
    return ItemOut.of(item)


def _metadata(text: str | None, settings: Settings) -> dict:
    value = parse_json_field(text, settings, ("body", "metadata"), "bad_metadata")  # bounded: service.limits
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise validation_error(("body", "metadata"), "metadata must be a JSON object", "bad_metadata")
    return value
