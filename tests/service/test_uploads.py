"""Uploads that are not usable images: each gets its own status and code, and the service carries on."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from tests.service.conftest import assert_error, png_bytes


def upload(client, data: bytes, ctype: str = "image/png", name: str = "q.png", path: str = "/v1/search/image"):
    return client.post(path, files={"file": (name, data, ctype)}, data={"k": "3"})


def still_serves(client, sample_png) -> None:
    r = upload(client, sample_png.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["source"] == sample_png.name


def test_corrupt_png_is_400_bad_image(client, sample_png):
    data = sample_png.read_bytes()
    error = assert_error(upload(client, data[: len(data) // 2]), 400, "bad_image")
    assert error["detail"] == {"reason": "corrupt"}
    still_serves(client, sample_png)


def test_empty_file_is_400_bad_image(client, sample_png):
    error = assert_error(upload(client, b""), 400, "bad_image")
    assert error["detail"] == {"reason": "empty"}
    still_serves(client, sample_png)


def test_text_declared_as_text_is_415_unsupported_media_type(client, sample_png):
    assert_error(upload(client, b"hello, I am not a picture\n", "text/plain", "a.txt"), 415, "unsupported_media_type")
    assert_error(upload(client, sample_png.read_bytes(), "application/json"), 415, "unsupported_media_type")
    still_serves(client, sample_png)


def test_text_declared_as_png_is_415_not_an_image(client, sample_png):
    error = assert_error(upload(client, b"hello, I am not a picture\n", "image/png"), 415, "not_an_image")
    assert error["detail"] == {"reason": "not_an_image"}
    still_serves(client, sample_png)


def test_declared_type_parameters_and_case_are_ignored(client, sample_png):
    r = upload(client, sample_png.read_bytes(), "Image/PNG; charset=binary")
    assert r.status_code == 200, r.text


def test_too_many_pixels_is_413(serve, sample_png):
    with serve(max_image_pixels=1000) as c:  # the 64x64 emoji has 4096
        error = assert_error(upload(c, sample_png.read_bytes()), 413, "image_too_large")
        assert error["detail"] == {"reason": "too_many_pixels"}
        small = png_bytes(Image.new("RGB", (30, 30), "red"))
        assert upload(c, small).status_code == 200


def png_claiming(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_413(client, sample_png):
    for side in (20_000, 100_000):  # 400 million and 10 billion pixels, above the default 64 million
        error = assert_error(upload(client, png_claiming(side, side)), 413, "image_too_large")
        assert error["detail"] == {"reason": "too_many_pixels"}
    still_serves(client, sample_png)


def test_upload_over_max_upload_bytes_is_413(serve, sample_png):
    data = sample_png.read_bytes()
    with serve(max_upload_bytes=len(data)) as c:
        assert upload(c, data).status_code == 200
        noise = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        assert len(noise) > len(data)
        error = assert_error(upload(c, noise), 413, "image_too_large")
        assert str(len(data)) in error["message"]
        assert upload(c, data).status_code == 200


def test_body_far_over_the_limit_is_refused_before_it_is_read(serve, sample_png):
    with serve(max_upload_bytes=1000) as c:
        limit = c.app.state.settings.max_request_bytes
        huge = b"\x00" * (limit + 1)
        assert_error(upload(c, huge, "application/octet-stream"), 413, "request_too_large")

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(limit // 65536 + 2):
                yield b"\x00" * 65536

        r = c.post("/v1/search/text", content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413, "request_too_large")
        assert c.post("/v1/search/text", json={"query": "cat"}).status_code == 200


def test_file_sent_as_a_plain_field_is_422(client, sample_png):
    r = client.post("/v1/search/image", data={"file": "not a file", "k": "3"})
    assert_error(r, 422, "validation_error")
    still_serves(client, sample_png)
