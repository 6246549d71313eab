"""The search page and its assets are served, self-contained (the page itself is tested in a browser: test_page.py)."""

from __future__ import annotations


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
    for call in ("v1/search/image", "v1/search/${q.kind}", "v1/classify", "v1/collections",
                 "/facets", "/encoder", "v1/items/"):
        assert call in js
    everything = page.text + js + client.get("/static/app.css").text
    assert "http://" not in everything and "https://" not in everything  # no CDN, no font service: nothing external
