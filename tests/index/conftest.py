"""Fixtures for the index tests: bad and odd image files made with PIL at test time; a tiny
encoder and an empty SQLite catalog."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index.catalog import Catalog
from training.encoder import load_encoder


def png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


@pytest.fixture
def odd_files(tmp_path) -> dict[str, Path]:
    """Files an indexer meets in the wild; good ones must decode, bad ones must be refused."""
    d = tmp_path / "odd"
    d.mkdir()
    files = {}

    def put(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        files[name] = d / name

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    good = png_bytes(rgb)
    put("good.png", good)
    put("truncated.png", good[: len(good) // 2])
    jpeg = png_bytes(rgb, format="JPEG", quality=90)
    put("truncated.jpg", jpeg[: len(jpeg) // 2])
    put("zero.jpg", b"")
    put("text.jpg", b"hello, I am not a picture\n")
    put("cmyk.jpg", png_bytes(rgb.convert("CMYK"), format="JPEG"))
    put("sixteen.png", png_bytes(Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16))))
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    put("animated.gif", buf.getvalue())
    # A decompression bomb: a tiny file that claims 30000 x 30000 pixels.
    put("bomb.png", png_bytes(Image.new("1", (30000, 30000)), optimize=True))
    # EXIF orientation 6 (rotate 90° clockwise when shown): stored 64 wide x 48 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    put("rotated.jpg", png_bytes(rgb, format="JPEG", exif=exif))
    return files


# a loaded tiny encoder and an empty SQLite catalog, for the publishing tests (update, publish)
@pytest.fixture
def encoder(micro_encoder):
    return load_encoder(micro_encoder)


@pytest.fixture
def catalog(tmp_path):
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    c.migrate()
    yield c
    c.dispose()
