"""Turning arbitrary PIL images into the RGB pictures every encoder expects.

Transparent artwork (emoji, logos, icons) is composited onto a white background:
a plain ``convert("RGB")`` keeps whatever colour the transparent pixels happen
to store, often black, and the encoder would then learn or see that.

Part of the encoder contract, not shared plumbing: every encoder's preprocessing starts
with it (``training.encoder``), so that a query image is flattened as the training images
were; the service calls it on uploads only to refuse, before the encoder's batch, an image
that cannot become RGB.
"""

from __future__ import annotations

from PIL import Image

WHITE = (255, 255, 255)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Return ``image`` as an RGB picture, flattening any transparency onto ``background``."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        # Palette images may carry transparency in their info dict.
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping.
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        image = Image.fromarray((arr * scale).clip(0, 255).astype("uint8"), mode="L")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
