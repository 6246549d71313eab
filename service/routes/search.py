"""``POST /v1/search/{text,image,similar,vector}``: every way to search, with paging and metadata filters."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service import search
from service.deps import ResourcesDep, SettingsDep
from service.errors import validation_error
from service.filters import compile_filter
from service.keys import AUTH_ERRORS, require
from service.limits import check_page, check_text, parse_json_field
from service.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    ErrorResponse,
    SearchResponse,
    SimilarRequest,
    TextSearchRequest,
    VectorSearchRequest,
    filter_json_schema,
    limit,
    upload_errors,
)
from service.uploads import decode_base64, read_image

FILTER_FIELD = {"contentMediaType": "application/json", "contentSchema": filter_json_schema(),
                **limit(maxLength="max_filter_chars")}

router = APIRouter(prefix="/search", tags=["search"], dependencies=[Depends(require("read"))],
                   responses=AUTH_ERRORS)


@router.post(
    "/text", response_model=SearchResponse, summary="Find images by text",
    responses={
        400: {"model": ErrorResponse, "description": "`no_text_tower`: the encoder embeds images only"},
        422: {"model": ErrorResponse, "description": "`empty_query` or `validation_error` (e.g. k out of range)"},
    },
)
async def search_text(body: TextSearchRequest, res: ResourcesDep, settings: SettingsDep) -> SearchResponse:
    """The `k` indexed images that best match the words of `query`, best first."""
    check_page(body.k, body.offset, settings)
    check_text(body.query, settings, ("body", "query"))
    return await search.search_text(res, body.query, body.k, body.offset, compile_filter(body.filter))


@router.post("/image", response_model=SearchResponse, summary="Find similar images", responses=upload_errors())
async def search_image(
    file: Annotated[UploadFile, File(description="the query image (PNG, JPEG, GIF, WebP, ...)")],
    res: ResourcesDep,
    settings: SettingsDep,
    k: Annotated[int, Form(ge=1, description="how many results (at most the server's max_k)",
                           json_schema_extra=limit(maximum="max_k"))] = 10,
    offset: Annotated[int, Form(ge=0, description="skip this many results first",
                                json_schema_extra=limit(maximum="max_offset"))] = 0,
    filter: Annotated[str | None, Form(description="a metadata filter as JSON (see the text search)",
                                       json_schema_extra=FILTER_FIELD)] = None,
) -> SearchResponse:
    """The `k` indexed images that look most like the uploaded one, best first."""
    check_page(k, offset, settings)
    keep = compile_filter(parse_json_field(filter, settings, ("body", "filter"), "bad_filter"))
    image = await read_image(file, settings)
    return await search.search_image(res, image, k, offset, keep)


@router.post(
    "/similar", response_model=SearchResponse, summary="More like this indexed item",
    responses={
        404: {"model": ErrorResponse, "description": "`not_found`: no such item, or it has no vector"},
        422: {"model": ErrorResponse, "description": "`validation_error` (e.g. k out of range)"},
    },
)
async def search_similar(body: SimilarRequest, res: ResourcesDep, settings: SettingsDep) -> SearchResponse:
    """The `k` items nearest to item `id` (its stored embedding), the item itself left out, best first."""
    check_page(body.k, body.offset, settings)
    return await search.search_similar(res, body.id, body.k, body.offset, compile_filter(body.filter))


@router.post(
    "/vector", response_model=SearchResponse, summary="Search with a raw embedding",
    responses={422: {"model": ErrorResponse,
                     "description": "`validation_error`: wrong dimension, non-finite or zero vector, k out of range"}},
)
async def search_vector(body: VectorSearchRequest, res: ResourcesDep, settings: SettingsDep) -> SearchResponse:
    """The `k` items nearest to `vector` (same encoder, any scale: it is normalised), best first."""
    check_page(body.k, body.offset, settings)
    return await search.search_vector(res, body.vector, body.k, body.offset, compile_filter(body.filter))


@router.post(
    "/batch", response_model=BatchSearchResponse, summary="Several searches in one call",
    responses=upload_errors(s422="`validation_error`: a query gives none or several of text/image/id/vector, "
                                 "too many queries, bad base64, ..."),
)
async def search_batch(body: BatchSearchRequest, res: ResourcesDep, settings: SettingsDep) -> BatchSearchResponse:
    """Each query is text, a base64 image, an item id (more like this) or a vector; all share `k`, `offset` and
    `filter`. The queries are encoded together (one encoder call for the texts, one for the images)."""
    check_page(body.k, body.offset, settings)
    if len(body.queries) > settings.max_batch_queries:
        raise validation_error(("body", "queries"), f"at most {settings.max_batch_queries} queries per batch",
                               "too_long")
    keep = compile_filter(body.filter)
    images = {}
    for i, q in enumerate(body.queries):  # decode (and reject) every image before any work is done
        if q.text is not None:
            check_text(q.text, settings, ("body", "queries", i, "text"))
        if q.image is not None:
            images[i] = await decode_base64(q.image, settings, f"body.queries.{i}.image")

    def one(i: int, q):
        if q.text is not None:
            return search.search_text(res, q.text.strip(), body.k, body.offset, keep)
        if q.image is not None:
            return search.search_image(res, images[i], body.k, body.offset, keep)
        if q.id is not None:
            return search.search_similar(res, q.id, body.k, body.offset, keep)
        return search.search_vector(res, q.vector, body.k, body.offset, keep)

    responses = await asyncio.gather(*(one(i, q) for i, q in enumerate(body.queries)))
    return BatchSearchResponse(responses=list(responses))
