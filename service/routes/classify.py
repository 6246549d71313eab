"""``POST /v1/classify``: zero-shot classification of an uploaded image into the labels given."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.classify import classify_image, parse_labels, parse_templates
from service.deps import ResourcesDep, SettingsDep
from service.keys import AUTH_ERRORS, require
from service.schemas import ClassifyResponse, upload_errors
from service.search import require_text_tower
from service.uploads import read_image

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
        list[str] | None,
        Form(description="the candidate labels: repeat the field, or give one comma-separated string"),
    ] = None,
    templates: Annotated[
        list[str] | None,
        Form(description="prompt templates with one `{}` for the label (repeat the field); default: the server's"),
    ] = None,
) -> ClassifyResponse:
    """Every label with its probability (softmax over the encoder's scaled cosine similarities), best first."""
    require_text_tower(res)
    names = parse_labels(labels, settings)
    prompts = parse_templates(templates, settings)
    image = await read_image(file, settings)
    return await classify_image(res, image, names, prompts)
