"""The application as a whole: start-up checks, health, OpenAPI, the web page, error shapes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.state import StartupError
from tests.service.conftest import assert_error


def test_healthz_names_what_is_served(client, built_index):
    from training.encoder import read_metadata

    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["count"] == built_index["count"]
    assert body["encoder_fingerprint"] == read_metadata(built_index["encoder"])["fingerprint"]
    assert body["index_version"] == (built_index["index"] / "CURRENT").read_text().strip()
    assert body["can_encode_text"] is True
    assert body["collection"] == "default"


def test_readyz_counts_the_catalog(client, built_index):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "catalog_items": built_index["count"]}


def test_encoder_that_did_not_build_the_index_refuses_to_start(make_settings, other_encoder, built_index):
    from training.encoder import read_metadata

    app = create_app(make_settings(encoder=str(other_encoder)))
    with pytest.raises(StartupError) as caught:
        with TestClient(app):
            pass
    message = str(caught.value)
    assert "mismatch" in message
    assert read_metadata(other_encoder)["fingerprint"] in message
    assert read_metadata(built_index["encoder"])["fingerprint"] in message


@pytest.mark.parametrize("overrides, words", [
    ({"index": "/nonexistent/index"}, "no index version published"),
    ({"encoder": "/nonexistent/enc.safetensors"}, "encoder file not found"),
    ({"database_url": "sqlite:////nonexistent/catalog.db"}, "catalog database not found"),
    ({"collection": "other"}, "collection 'default'"),
])
def test_unusable_setups_refuse_to_start(make_settings, overrides, words):
    with pytest.raises(StartupError, match=words):
        with TestClient(create_app(make_settings(**overrides))):
            pass


def test_catalog_without_items_refuses_to_start(make_settings, tmp_path):
    from index.catalog import Catalog

    empty = Catalog(f"sqlite:///{tmp_path / 'empty.db'}")
    empty.migrate()
    empty.dispose()
    with pytest.raises(StartupError, match="no items"):
        with TestClient(create_app(make_settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))):
            pass
    (tmp_path / "blank.db").write_bytes(b"")  # a database without the items table
    with pytest.raises(StartupError, match="cannot read the catalog"):
        with TestClient(create_app(make_settings(database_url=f"sqlite:///{tmp_path / 'blank.db'}"))):
            pass


def test_settings_come_from_the_environment(monkeypatch, built_index):
    from service.settings import Settings

    monkeypatch.setenv("LOOKALIKE_ENCODER", built_index["encoder"])
    monkeypatch.setenv("LOOKALIKE_INDEX", str(built_index["index"]))
    monkeypatch.delenv("LOOKALIKE_DATABASE_URL", raising=False)
    monkeypatch.setenv("LOOKALIKE_MAX_K", "7")
    s = Settings()
    assert s.max_k == 7
    assert s.database_url == built_index["database_url"]  # sqlite beside the index folder, as `index build` does
    assert Settings(max_k=9).max_k == 9  # arguments win over the environment
    monkeypatch.setenv("LOOKALIKE_DEFAULT_TEMPLATES", '["no slot"]')
    with pytest.raises(ValueError, match="slot"):
        Settings()


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "lookalike"
    paths = spec["paths"]
    for path in ("/v1/search/text", "/v1/search/image", "/v1/classify", "/v1/items/{item_id}",
                 "/v1/items/{item_id}/image", "/healthz", "/readyz"):
        assert path in paths, sorted(paths)
    schemas = spec["components"]["schemas"]
    for name in ("TextSearchRequest", "SearchResponse", "SearchHit", "ClassifyResponse", "ItemOut", "ErrorResponse"):
        assert schemas[name].get("examples"), name
    assert "/" not in paths  # the web page is not part of the API


def test_a_request_past_the_time_limit_gets_a_503_and_the_service_goes_on(serve):
    import time as _time

    with serve(request_timeout=0.3) as client:
        res = client.app.state.resources
        fast = res.text_batcher.fn
        res.text_batcher.fn = lambda texts: (_time.sleep(1.0), fast(texts))[1]  # a stuck encoder
        try:
            slow = client.post("/v1/search/text", json={"query": "dog"})
        finally:
            res.text_batcher.fn = fast
        assert_error(slow, 503, "timeout")
        assert slow.headers["retry-after"] == "1"
        _time.sleep(1.0)  # the stuck call finishes in its thread; the encoder is free again
        assert client.post("/v1/search/text", json={"query": "dog"}).status_code == 200
