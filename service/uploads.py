"""Reading an uploaded image safely: declared type, size cap, then a decode with pixel limits."""

from __future__ import annotations

import base64
import binascii

from fastapi import UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from index.decode import BadImage, DecodeLimits, open_image
from service.errors import ApiError, validation_error
from service.settings import Settings
from training.images import to_rgb

ACCEPTED_GENERIC_TYPE = "application/octet-stream"  # what clients send when they do not know the type

_BAD_IMAGE = {  # BadImage.reason -> (status, code)
    "empty": (400, "bad_image"),
    "corrupt": (400, "bad_image"),
    "not_an_image": (415, "not_an_image"),
    "too_many_pixels": (413, "image_too_large"),
}


def media_type(upload: UploadFile) -> str:
    """The upload's declared type without parameters, lower case; none declared counts as generic bytes."""
    declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
    return declared or ACCEPTED_GENERIC_TYPE


async def read_image(upload: UploadFile, settings: Settings) -> Image.Image:
    """The decoded first frame of ``upload``; raises ApiError 415/413/400 for anything else."""
    return (await read_upload(upload, settings))[1]


async def read_upload(upload: UploadFile, settings: Settings) -> tuple[bytes, Image.Image]:
    """The upload's bytes and their decoded first frame; raises ApiError 415/413/400 for anything else."""
    declared = media_type(upload)
    if not (declared.startswith("image/") or declared == ACCEPTED_GENERIC_TYPE):
        raise ApiError(415, "unsupported_media_type",
                       f"the upload is declared as {declared}; send an image (image/*) or application/octet-stream")
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, "image_too_large",
                       f"the upload is larger than the limit of {settings.max_upload_bytes} bytes")
    return data, await decode(data, settings)


async def decode(data: bytes, settings: Settings, where: str | None = None) -> Image.Image:
    """Decode bytes with the pixel limit; a bad image is an ApiError (``where`` names it in the detail)."""
    try:
        return await run_in_threadpool(_open_rgb, data, settings.max_image_pixels)
    except BadImage as exc:
        status, code = _BAD_IMAGE.get(exc.reason, (400, "bad_image"))
        detail = {"reason": exc.reason, **({"image": where} if where else {})}
        raise ApiError(status, code, f"{where}: {exc}" if where else str(exc), detail) from None


def _open_rgb(data: bytes, max_pixels: int) -> Image.Image:
    """The first frame as RGB, as the encoder takes it: a mode that cannot become RGB is a bad image here,
    not an error inside the encoder's batch."""
    image = open_image(data, DecodeLimits(max_pixels))
    try:
        return to_rgb(image)
    except Exception as exc:  # e.g. a float or complex pixel mode that Pillow cannot convert
        raise BadImage("corrupt", f"the image's {image.mode} pixels cannot be turned into RGB ({exc})") from None


async def decode_base64(text: str, settings: Settings, where: str) -> Image.Image:
    """A base64 image from a JSON body (standard or URL-safe alphabet, optional data: URL prefix)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (settings.max_upload_bytes * 4) // 3 + 4:
        raise ApiError(413, "image_too_large", f"{where}: larger than the limit of {settings.max_upload_bytes} bytes")
    try:
        data = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise validation_error(tuple(where.split(".")), "not valid base64", "bad_base64") from None
    return await decode(data, settings, where)
