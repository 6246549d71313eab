"""Real images for schemathesis: the multipart image parts that the OpenAPI document declares
(``encoding.contentType``) get PNG or JPEG files drawn here, and base64 strings (``format: byte``,
only ever images in this API) base64 PNGs, so that generated uploads are images the server must
accept rather than random bytes it must refuse.

Imported by ``test_schema_fuzz.py``; for the command line: ``SCHEMATHESIS_HOOKS=tests.service.schemathesis_hooks``.
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


@st.composite
def image_file(draw: st.DrawFn, format: str, modes: tuple[str, ...]) -> bytes:
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    image = Image.new("RGB", size, tuple(draw(st.integers(0, 255)) for _ in range(3)))
    if draw(st.booleans()):  # some texture, so that not every upload is one flat colour
        image.putpixel((0, 0), (255 - image.getpixel((0, 0))[0], 0, 0))
    buf = io.BytesIO()
    image.convert(draw(st.sampled_from(modes))).save(buf, format=format)
    return buf.getvalue()


schemathesis.openapi.media_type("image/png", image_file("PNG", ("RGB", "RGBA", "L", "P", "1")))
schemathesis.openapi.media_type("image/jpeg", image_file("JPEG", ("RGB", "L", "CMYK")))
schemathesis.openapi.format("byte", image_file("PNG", ("RGB", "RGBA", "L")).map(lambda b: base64.b64encode(b).decode()))
