"""``POST /v1/classify``: zero-shot classification of an uploaded image into the labels given."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.classify import classify_image, parse_labels, parse_templates
from service.deps import ResourcesDep, SettingsDep
from service.errors import validation_error
from service.keys import AUTH_ERRORS, require
from service.schemas import (
    LIST_CEILING,
    BatchClassifyRequest,
    BatchClassifyResponse,
    ClassifyResponse,
    Label,
    Template,
    limit,
    upload_errors,
)
from service.search import require_text_tower
from service.uploads import decode_base64, read_image

router = APIRouter(tags=["classify"], dependencies=[Depends(require("read"))], responses=AUTH_ERRORS)


@router.post(
    "/classify", response_model=ClassifyResponse, summary="Classify an image into any labels (zero-shot)",
    responses=upload_errors(s400="`bad_image`, or `no_text_tower` for image-only encoders",
                            s422="`validation_error`: no labels, too many, bad template"),
)
async def classify(
    file: Annotated[UploadFile, File(description="the image to classify")],
    res: ResourcesDep,
    settings: SettingsDep,
    labels: Annotated[
        list[Label],
        Form(description="the candidate labels: repeat the field, or give one comma-separated string",
             min_length=1, max_length=LIST_CEILING, json_schema_extra=limit(maxItems="max_labels")),
    ],
    templates: Annotated[
        list[Template] | None,
        Form(description="prompt templates with one `{}` for the label (repeat the field); default: the server's",
             max_length=LIST_CEILING, json_schema_extra=limit(maxItems="max_templates")),
    ] = None,
) -> ClassifyResponse:
    """Every label with its probability (softmax over the encoder's scaled cosine similarities), best first."""
    require_text_tower(res)
    names = parse_labels(labels, settings)
    prompts = parse_templates(templates, settings)
    image = await read_image(file, settings)
    return await classify_image(res, image, names, prompts)


@router.post(
    "/classify/batch", response_model=BatchClassifyResponse, summary="Classify several images (base64) at once",
    responses=upload_errors(s400="`bad_image`, or `no_text_tower` for image-only encoders",
                            s422="`validation_error`: no labels, too many images or labels, bad base64"),
)
async def classify_batch(body: BatchClassifyRequest, res: ResourcesDep, settings: SettingsDep) -> BatchClassifyResponse:
    """Every image against the same labels (embedded once); results in the order of the images."""
    require_text_tower(res)
    if len(body.images) > settings.max_batch_queries:
        raise validation_error(("body", "images"), f"at most {settings.max_batch_queries} images per batch",
                               "too_long")
    names = parse_labels(body.labels, settings)
    prompts = parse_templates(body.templates, settings)
    images = [await decode_base64(text, settings, f"body.images.{i}") for i, text in enumerate(body.images)]
    results = await asyncio.gather(*(classify_image(res, image, names, prompts) for image in images))
    return BatchClassifyResponse(results=list(results))
