"""``POST /v1/search/{text,image,similar,vector}``: every way to search, with paging and metadata filters."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service import search
from service.deps import ResourcesDep, SettingsDep
from service.errors import validation_error
from service.filters import compile_filter
from service.keys import AUTH_ERRORS, require
from service.limits import check_k, check_text
from service.schemas import (ErrorResponse, SearchResponse, SimilarRequest, TextSearchRequest, VectorSearchRequest,
                             upload_errors)
from service.uploads import read_image

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
    check_k(body.k, settings, ("body", "k"))
    check_text(body.query, settings, ("body", "query"))
    return await search.search_text(res, body.query, body.k, body.offset, compile_filter(body.filter))


@router.post("/image", response_model=SearchResponse, summary="Find similar images", responses=upload_errors())
async def search_image(
    file: Annotated[UploadFile, File(description="the query image (PNG, JPEG, GIF, WebP, ...)")],
    res: ResourcesDep,
    settings: SettingsDep,
    k: Annotated[int, Form(ge=1, description="how many results (at most the server's max_k)")] = 10,
    offset: Annotated[int, Form(ge=0, description="skip this many results first")] = 0,
    filter: Annotated[str | None, Form(description="a metadata filter as JSON (see the text search)")] = None,
) -> SearchResponse:
    """The `k` indexed images that look most like the uploaded one, best first."""
    check_k(k, settings, ("body", "k"))
    keep = compile_filter(_json_form(filter, ("body", "filter")))
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
    check_k(body.k, settings, ("body", "k"))
    return await search.search_similar(res, body.id, body.k, body.offset, compile_filter(body.filter))


@router.post(
    "/vector", response_model=SearchResponse, summary="Search with a raw embedding",
    responses={422: {"model": ErrorResponse,
                     "description": "`validation_error`: wrong dimension, non-finite or zero vector, k out of range"}},
)
async def search_vector(body: VectorSearchRequest, res: ResourcesDep, settings: SettingsDep) -> SearchResponse:
    """The `k` items nearest to `vector` (same encoder, any scale: it is normalised), best first."""
    check_k(body.k, settings, ("body", "k"))
    return await search.search_vector(res, body.vector, body.k, body.offset, compile_filter(body.filter))


def _json_form(text: str | None, loc: tuple[str, ...]):
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise validation_error(loc, f"not JSON: {exc.msg}", "bad_filter") from None
