"""POST /v1/search/text and /v1/search/image against a real encoder, index and catalog."""

from __future__ import annotations

from index.catalog import Catalog
from tests.service.conftest import assert_error


def test_text_search_returns_k_catalog_rows_best_first(client, built_index):
    r = client.post("/v1/search/text", json={"query": "dog face", "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    hits = body["results"]
    assert len(hits) == 7
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    assert len({h["id"] for h in hits}) == 7
    assert body["index_version"] == client.get("/healthz").json()["index_version"]
    assert body["took_ms"] >= 0

    catalog = Catalog(built_index["database_url"])
    rows = catalog.get_many(h["id"] for h in hits)
    catalog.dispose()
    for h in hits:
        row = rows[h["id"]]
        assert (h["source"], h["collection"], h["metadata"]) == (row.public_source, row.collection, row.meta)
        assert h["image_url"] == f"/v1/items/{h['id']}/image"


def test_text_search_default_k_and_stripped_query(client):
    r = client.post("/v1/search/text", json={"query": "  red heart \n"})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 10
    same = client.post("/v1/search/text", json={"query": "red heart"}).json()["results"]
    assert [h["id"] for h in same] == [h["id"] for h in r.json()["results"]]


def test_k_above_the_index_size_returns_every_item(client, built_index):
    hits = client.post("/v1/search/text", json={"query": "flag", "k": 100}).json()["results"]
    assert len(hits) == min(100, built_index["count"])
    assert len({h["id"] for h in hits}) == len(hits)


def test_image_search_finds_the_query_image_first(client, sample_png):
    data = sample_png.read_bytes()
    r = client.post("/v1/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "5"})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert len(hits) == 5
    assert hits[0]["source"] == sample_png.name
    assert abs(hits[0]["score"] - 1.0) < 1e-4
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_image_search_accepts_octet_stream_and_other_formats(client, sample_png):
    from PIL import Image

    from tests.service.conftest import png_bytes

    jpeg = png_bytes(Image.open(sample_png).convert("RGB"), format="JPEG")
    for payload, ctype in ((sample_png.read_bytes(), "application/octet-stream"), (jpeg, "image/jpeg")):
        r = client.post("/v1/search/image", files={"file": ("q", payload, ctype)})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 10


def test_empty_and_blank_queries_are_422_empty_query(client):
    for query in ("", "   ", "\n\t"):
        error = assert_error(client.post("/v1/search/text", json={"query": query}), 422, "empty_query")
        assert error["detail"][0]["loc"] == ["body", "query"]
    assert client.post("/v1/search/text", json={"query": "cat"}).status_code == 200


def test_k_out_of_range_is_422(client, sample_png):
    for k in (0, -3, 101, 10**6):
        error = assert_error(client.post("/v1/search/text", json={"query": "cat", "k": k}), 422, "validation_error")
        assert error["detail"][0]["loc"] == ["body", "k"]
        r = client.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")},
                        data={"k": str(k)})
        assert_error(r, 422, "validation_error")
    assert_error(client.post("/v1/search/text", json={"query": "cat", "k": "many"}), 422, "validation_error")
    assert client.post("/v1/search/text", json={"query": "cat", "k": 100}).status_code == 200


def test_max_k_is_a_setting(serve):
    with serve(max_k=3) as c:
        assert_error(c.post("/v1/search/text", json={"query": "cat", "k": 4}), 422, "validation_error")
        assert len(c.post("/v1/search/text", json={"query": "cat", "k": 3}).json()["results"]) == 3


def test_malformed_bodies_are_422(client):
    assert_error(client.post("/v1/search/text", json={"k": 3}), 422, "validation_error")
    assert_error(client.post("/v1/search/text", json={"query": 12}), 422, "validation_error")
    assert_error(client.post("/v1/search/text", json={"query": "cat", "top_k": 3}), 422, "validation_error")
    assert_error(client.post("/v1/search/text", content=b"{not json", headers={"content-type": "application/json"}),
                 422, "validation_error")
    assert_error(client.post("/v1/search/text", json=["cat"]), 422, "validation_error")
    assert_error(client.post("/v1/search/image", data={"k": "3"}), 422, "validation_error")  # no file
    assert client.post("/v1/search/text", json={"query": "cat"}).status_code == 200


def test_overlong_query_is_422(serve):
    with serve(max_text_chars=20) as c:
        error = assert_error(c.post("/v1/search/text", json={"query": "x" * 21}), 422, "validation_error")
        assert error["detail"][0]["loc"] == ["body", "query"]
        assert c.post("/v1/search/text", json={"query": "x" * 20}).status_code == 200


def test_offset_pages_through_one_stable_order(client):
    whole = [h["id"] for h in client.post("/v1/search/text", json={"query": "cat", "k": 12}).json()["results"]]
    pages = [client.post("/v1/search/text", json={"query": "cat", "k": 4, "offset": o}).json()["results"]
             for o in (0, 4, 8)]
    assert [h["id"] for page in pages for h in page] == whole
    assert_error(client.post("/v1/search/text", json={"query": "cat", "offset": -1}), 422, "validation_error")


def test_more_like_this_leaves_the_item_out(client, sample_png):
    first = client.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")},
                        data={"k": "6"}).json()["results"]
    item_id = first[0]["id"]  # the query image itself
    r = client.post("/v1/search/similar", json={"id": item_id, "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert [h["id"] for h in hits] == [h["id"] for h in first[1:]]  # the same neighbours, minus itself
    assert_error(client.post("/v1/search/similar", json={"id": 10**9, "k": 5}), 404, "not_found")
    assert_error(client.post("/v1/search/similar", json={"id": item_id, "k": 0}), 422, "validation_error")


def test_search_by_raw_vector(client, micro_encoder, sample_png):
    from PIL import Image

    from training.encoder import load_encoder

    vector = load_encoder(micro_encoder).encode_images([Image.open(sample_png)])[0]
    r = client.post("/v1/search/vector", json={"vector": (3.0 * vector).tolist(), "k": 3})  # any scale
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["source"] == sample_png.name and abs(top["score"] - 1.0) < 1e-4
    dim = len(vector)
    for bad, why in [([0.1] * (dim + 1), "wrong_dimension"), ([0.0] * dim, "bad_vector"), ([], "too_short")]:
        err = assert_error(client.post("/v1/search/vector", json={"vector": bad}), 422, "validation_error")
        assert err["detail"][0]["type"] == why
    nan = client.post("/v1/search/vector", content=b'{"vector": [NaN' + b", 0.1" * (dim - 1) + b"]}",
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422, nan.text
