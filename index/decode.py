"""Safe image decoding for untrusted files and uploads.

Limits are checked from the header before any pixel is decoded, so a
decompression bomb costs a few bytes of reading, not gigabytes of memory.
Whatever Pillow raises on a damaged file becomes ``BadImage``: a file may come from anyone.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000


class BadImage(ValueError):
    """A file that is not an image we can use; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS


def open_image(source: str | Path | bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode the first frame of an image file or bytes, EXIF-orientation applied.

    Raises BadImage with reason ``empty``, ``not_an_image``, ``too_many_pixels`` or ``corrupt``.
    """
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise BadImage("empty", "the file is empty")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if path.stat().st_size == 0:
            raise BadImage("empty", f"{path} is empty")
        fp = open(path, "rb")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(fp)
            except UnidentifiedImageError:
                raise BadImage("not_an_image", "the data is not an image format we can read") from None
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
                raise BadImage("too_many_pixels", str(exc)) from None
            except Exception as exc:  # a plugin choking on a damaged header: struct.error, SyntaxError, ...
                raise BadImage("corrupt", f"the image header could not be read ({type(exc).__name__})") from None
            pixels = image.width * image.height
            if pixels > limits.max_pixels:
                raise BadImage(
                    "too_many_pixels",
                    f"image is {image.width}x{image.height} = {pixels} pixels, above the limit of {limits.max_pixels}",
                )
            try:
                image.seek(0)  # first frame of GIF/TIFF/WebP animations
                image.load()
                image = ImageOps.exif_transpose(image)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:  # a frame past the header's
                raise BadImage("too_many_pixels", str(exc)) from None
            except Exception as exc:  # whatever a decoder raises on damaged data: OSError, SyntaxError, EOFError, ...
                why = str(exc)[:200] or type(exc).__name__
                raise BadImage("corrupt", f"the image could not be decoded ({why})") from None
            return image
    finally:
        fp.close()
