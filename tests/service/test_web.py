"""The search page: served with its assets, and its script works against a live service."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

DRIVER = Path(__file__).with_name("page_driver.js")


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "lookalike" in page.text
    for asset in ("static/app.js", "static/app.css"):
        assert asset in page.text
        r = client.get("/" + asset)
        assert r.status_code == 200 and r.content
    js = client.get("/static/app.js").text
    for call in ("v1/search/text", "v1/search/image", "v1/classify", "healthz"):
        assert call in js
    assert "http://" not in page.text + js and "https://" not in page.text + js  # no CDN, nothing external


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_page_script_searches_and_classifies(live_server, indexed_rows, sample_png):
    proc = subprocess.run(
        ["node", str(DRIVER), live_server, str(REPO / "service" / "static" / "app.js"), str(sample_png)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "images" in report["status"]
    assert len(report["text"]) == 8
    assert all(card["src"].startswith("/v1/items/") and card["score"].startswith("score ") for card in report["text"])
    assert report["image"][0]["name"] == indexed_rows[0]["name"]  # the query image itself, by its name
    assert sorted(report["labels"]) == ["dog", "flag", "keycap"]
    assert "empty" in report["error"]
    assert report["image_fetch"] == 200
