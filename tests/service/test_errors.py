"""Every error has one JSON shape and the right status; a 500 only for the server's own failures."""

from __future__ import annotations

import json

from tests.service.conftest import assert_error


def test_unknown_route_and_wrong_method_have_the_error_shape(client):
    error = assert_error(client.get("/v1/nope"), 404, "not_found")
    assert "/v1/nope" in error["message"]
    r = client.get("/v1/search/text")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]
    assert_error(client.get("/static/missing.js"), 404, "not_found")
    assert client.get("/healthz").status_code == 200


def test_unexpected_failures_are_500_with_the_same_shape(serve, monkeypatch):
    with serve(raise_server_exceptions=False) as c:
        catalog = c.app.state.resources.catalog

        def broken(ids):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(catalog, "get_many", broken)
        error = assert_error(c.post("/v1/search/text", json={"query": "cat"}), 500, "internal_error")
        assert "disk on fire" not in error["message"]  # internals stay in the log
        monkeypatch.undo()
        assert c.post("/v1/search/text", json={"query": "cat"}).status_code == 200


def test_error_detail_is_json_safe(client):
    """Validation errors whose pydantic context holds exception objects still serialise."""
    r = client.post("/v1/search/text", content=json.dumps({"query": "cat", "k": 1.5}),
                    headers={"content-type": "application/json"})
    error = assert_error(r, 422, "validation_error")
    json.dumps(error)
    assert all(set(d) == {"loc", "msg", "type"} for d in error["detail"])


def test_openapi_documents_the_error_shape(client):
    spec = client.get("/openapi.json").json()
    ref = "#/components/schemas/ErrorResponse"
    for path, status in (("/v1/search/text", "422"), ("/v1/search/image", "415"), ("/v1/classify", "400"),
                         ("/v1/items/{item_id}", "404")):
        operation = next(iter(spec["paths"][path].values()))
        assert operation["responses"][status]["content"]["application/json"]["schema"]["$ref"] == ref, path


def test_every_error_code_is_snake_case(client, sample_png):
    import re

    responses = [
        client.get("/nope"),
        client.post("/v1/search/text", json={"query": ""}),
        client.post("/v1/search/text", json={"query": "x", "k": 0}),
        client.post("/v1/search/image", files={"file": ("a", b"text", "text/plain")}),
        client.post("/v1/search/image", files={"file": ("a", b"text", "image/png")}),
        client.post("/v1/search/image", files={"file": ("a", sample_png.read_bytes()[:100], "image/png")}),
        client.get("/v1/items/0"),
    ]
    for r in responses:
        assert r.status_code >= 400
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", r.json()["error"]["code"]), r.json()


def test_a_server_error_is_answered_at_once_not_at_the_request_timeout(serve, monkeypatch):
    """A failed request never starts a response: the timeout middleware must not wait for one until
    ``request_timeout`` before the 500 goes out."""
    import time

    with serve(raise_server_exceptions=False, request_timeout=20) as c:
        def broken(ids):
            raise RuntimeError("a bug")

        monkeypatch.setattr(c.app.state.resources.catalog, "get_many", broken)
        started = time.perf_counter()
        assert_error(c.post("/v1/search/text", json={"query": "cat"}), 500, "internal_error")
        assert time.perf_counter() - started < 5  # far below the 20 s limit


def test_a_405_lists_every_method_of_the_path(client):
    r = client.options("/v1/items/1")
    assert_error(r, 405, "method_not_allowed")
    assert {"GET", "PATCH", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}
