"""The whole path as a user runs it: train -> index -> serve -> query, each a separate process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from index.catalog import Catalog
from tests.conftest import REPO, running_service


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args[:2]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_manifest):
    work = tmp_path_factory.mktemp("e2e")
    encoder, index, db = work / "encoder.safetensors", work / "index", f"sqlite:///{work / 'catalog.db'}"
    _run("training", "clip", "--data", str(small_manifest), "--image-key", "file", "--caption-key", "name",
         "--out", str(encoder), "--model", "lookalike-micro", "--steps", "10", "--batch-size", "32",
         "--workers", "0", "--no-progress")
    _run("index", "build", "--encoder", str(encoder), "--source", str(small_manifest), "--out", str(index),
         "--database-url", db, "--workers", "0", "--no-progress")
    with running_service(encoder, index, db) as base:
        yield base, Catalog(db)


def test_text_search_returns_real_catalog_rows_and_their_images(served):
    base, catalog = served
    r = httpx.post(f"{base}/v1/search/text", json={"query": "dog face", "k": 5}, timeout=30)
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert len(hits) == 5
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    rows = catalog.get_many(h["id"] for h in hits)
    for hit in hits:
        row = rows[hit["id"]]
        assert hit["source"] == row.public_source and hit["metadata"] == row.meta
        image = httpx.get(f"{base}/v1/items/{hit['id']}/image", timeout=30)
        assert image.status_code == 200
        assert image.content == Path(row.source).read_bytes()


def test_image_search_finds_the_query_image_first(served):
    base, catalog = served
    row = catalog.get_many(range(1, 4))[2]
    with open(row.source, "rb") as f:
        r = httpx.post(f"{base}/v1/search/image", files={"file": ("q.png", f, "image/png")}, data={"k": "3"},
                       timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == row.id


def test_caller_mistakes_get_json_4xx_and_the_service_keeps_serving(served):
    base, _ = served
    bad = [
        httpx.post(f"{base}/v1/search/image", files={"file": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}),
        httpx.post(f"{base}/v1/search/image", files={"file": ("x.txt", b"just some text", "text/plain")}),
        httpx.post(f"{base}/v1/search/text", json={"query": "   ", "k": 5}),
    ]
    for r in bad:
        assert 400 <= r.status_code < 500, r.text
        assert set(r.json()["error"]) >= {"code", "message"}
    ok = httpx.post(f"{base}/v1/search/text", json={"query": "red apple", "k": 2}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2
