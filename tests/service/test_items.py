"""GET /v1/items/{id} and /v1/items/{id}/image."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from index.catalog import Catalog
from tests.service.conftest import assert_error


def test_item_matches_the_catalog_row(client, built_index):
    hit = client.post("/v1/search/text", json={"query": "smile", "k": 1}).json()["results"][0]
    r = client.get(f"/v1/items/{hit['id']}")
    assert r.status_code == 200, r.text
    item = r.json()
    catalog = Catalog(built_index["database_url"])
    row = catalog.get(hit["id"])
    catalog.dispose()
    assert item["id"] == row.id
    assert item["source"] == row.public_source == hit["source"]
    assert item["collection"] == row.collection == "default"
    assert item["content_hash"] == row.content_hash
    assert item["metadata"] == row.meta == hit["metadata"]
    assert dt.datetime.fromisoformat(item["created_at"]).tzinfo is not None
    assert dt.datetime.fromisoformat(item["updated_at"]) >= dt.datetime.fromisoformat(item["created_at"])
    assert item["image_url"] == hit["image_url"]


def test_image_bytes_are_the_files_bytes(client):
    for hit in client.post("/v1/search/text", json={"query": "flag", "k": 3}).json()["results"]:
        r = client.get(hit["image_url"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/png"
        assert r.content == Path(hit["metadata"]["file"]).read_bytes()
        head = client.head(hit["image_url"])
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(r.content)


def test_unknown_ids_are_404(client):
    for item_id in (0, 999_999, 2**63 - 1):
        assert_error(client.get(f"/v1/items/{item_id}"), 404, "not_found")
        assert_error(client.get(f"/v1/items/{item_id}/image"), 404, "not_found")
    assert client.get("/v1/items/1").status_code == 200


def test_ids_that_are_not_ids_are_422(client):
    for bad in ("abc", "-1", str(2**64), "1.5"):
        assert_error(client.get(f"/v1/items/{bad}"), 422, "validation_error")
    assert client.get("/v1/items/1").status_code == 200


def test_gone_file_is_404(serve, perishable_index):
    settings = {k: perishable_index[k] for k in ("encoder", "index", "database_url")}
    with serve(**settings) as c:
        hits = c.post("/v1/search/text", json={"query": "keycap", "k": 4}).json()["results"]
        assert len(hits) == 4
        victim, survivor = hits[0], hits[1]
        Path(victim["metadata"]["file"]).unlink()
        error = assert_error(c.get(victim["image_url"]), 404, "not_found")
        assert str(victim["id"]) in error["message"]
        assert c.get(f"/v1/items/{victim['id']}").status_code == 200  # the catalog row is still there
        assert c.get(survivor["image_url"]).content == Path(survivor["metadata"]["file"]).read_bytes()
