"""API keys: the CLI, scopes on every route, revocation, per-key rate limits, and item writes."""

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from index.catalog import Catalog
from index.job import BuildConfig, build
from service.app import create_app
from service.keys import RateLimiter, create_key, hash_key, list_keys, revoke_keys
from service.settings import Settings
from tests.conftest import REPO, copy_sample, sample_rows
from tests.service.conftest import assert_error


@pytest.fixture
def setup(micro_encoder, tmp_path):
    """A private index (tests here delete items) and its catalog URL."""
    folder = tmp_path / "imgs"
    copy_sample(sample_rows()[:8], folder)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=folder, out=tmp_path / "index", database_url=url,
                      workers=0, progress=False))
    return {"encoder": str(micro_encoder), "index": tmp_path / "index", "database_url": url}


def _client(setup, **settings):
    return TestClient(create_app(Settings(**setup, **settings)))


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_cli_creates_lists_and_revokes_keys(setup):
    run = lambda *a: subprocess.run([sys.executable, "-m", "service", "keys", "--database-url",  # noqa: E731
                                     setup["database_url"], *a], cwd=REPO, capture_output=True, text=True)
    made = run("create", "--name", "ops", "--scope", "read", "--scope", "write", "--rate-limit", "100")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("lk_") and len(key) > 40 and "not shown again" in made.stderr
    catalog = Catalog(setup["database_url"])
    rows = {r.name: r for r in list_keys(catalog)}
    assert rows["ops"].key_hash == hash_key(key) and key not in rows["ops"].key_hash  # only the hash is kept
    listed = run("list")
    assert "ops" in listed.stdout and "read,write" in listed.stdout and key not in listed.stdout
    with _client(setup) as client:
        assert client.delete("/v1/items/1", headers=_bearer(key)).status_code == 204
    assert run("revoke", "--name", "ops").returncode == 0
    with _client(setup) as client:
        assert_error(client.delete("/v1/items/2", headers=_bearer(key)), 401, "unauthorized")
    assert run("revoke", "--name", "ops").returncode == 2  # nothing left to revoke
    bad = run("create", "--name", "x", "--scope", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_writes_need_a_key_with_the_write_scope(setup):
    catalog = Catalog(setup["database_url"])
    reader, _ = create_key(catalog, "reader", ["read"])
    writer, _ = create_key(catalog, "writer", ["write"])
    admin, _ = create_key(catalog, "admin", ["admin"])
    with _client(setup) as client:
        hits = client.post("/v1/search/text", json={"query": "face", "k": 8}).json()["results"]  # reads: open
        a, b, c = (h["id"] for h in hits[:3])
        assert_error(client.delete(f"/v1/items/{a}"), 401, "unauthorized")
        assert client.delete(f"/v1/items/{a}").headers["www-authenticate"] == "Bearer"
        assert_error(client.delete(f"/v1/items/{a}", headers=_bearer("lk_nope")), 401, "unauthorized")
        assert_error(client.delete(f"/v1/items/{a}", headers=_bearer(reader)), 403, "forbidden")
        assert client.delete(f"/v1/items/{a}", headers={"X-API-Key": writer}).status_code == 204
        assert_error(client.get(f"/v1/items/{a}"), 404, "not_found")  # gone at once
        assert_error(client.delete(f"/v1/items/{a}", headers=_bearer(writer)), 404, "not_found")
        after = [h["id"] for h in client.post("/v1/search/text", json={"query": "face", "k": 8}).json()["results"]]
        assert a not in after and len(after) == 7

        r = client.patch(f"/v1/items/{b}", json={"metadata": {"album": "summer", "vendor": None}},
                         headers=_bearer(admin))  # admin may do anything
        assert r.status_code == 200, r.text
        assert r.json()["metadata"]["album"] == "summer" and "vendor" not in r.json()["metadata"]
        assert client.get(f"/v1/items/{b}").json()["metadata"]["album"] == "summer"
        assert_error(client.patch(f"/v1/items/{c}", json={"metadata": {"x": 1}}, headers=_bearer(reader)),
                     403, "forbidden")
        assert_error(client.patch(f"/v1/items/{c}", json={"meta": {}}, headers=_bearer(writer)),
                     422, "validation_error")
        # a key that is sent is checked even where none is needed
        assert_error(client.post("/v1/search/text", json={"query": "x"}, headers=_bearer("lk_bad")),
                     401, "unauthorized")


def test_reads_can_require_a_key(setup):
    catalog = Catalog(setup["database_url"])
    reader, _ = create_key(catalog, "reader", ["read"])
    writer, _ = create_key(catalog, "writer-only", ["write"])
    with _client(setup, require_key_for_reads=True) as client:
        assert_error(client.post("/v1/search/text", json={"query": "face"}), 401, "unauthorized")
        assert_error(client.get("/v1/items/1"), 401, "unauthorized")
        assert_error(client.post("/v1/search/text", json={"query": "face"}, headers=_bearer(writer)),
                     403, "forbidden")
        assert client.post("/v1/search/text", json={"query": "face"}, headers=_bearer(reader)).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open
        revoke_keys(catalog, name="reader")
        assert_error(client.post("/v1/search/text", json={"query": "face"}, headers=_bearer(reader)),
                     401, "unauthorized")  # at once


def test_each_key_has_its_own_rate_limit(setup):
    catalog = Catalog(setup["database_url"])
    slow, _ = create_key(catalog, "slow", ["read"], rate_limit=3)
    other, _ = create_key(catalog, "other", ["read"], rate_limit=3)
    with _client(setup) as client:
        for _ in range(3):
            assert client.get("/v1/items/1", headers=_bearer(slow)).status_code in (200, 404)
        limited = client.get("/v1/items/1", headers=_bearer(slow))
        assert_error(limited, 429, "too_many_requests")
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/items/1", headers=_bearer(other)).status_code in (200, 404)  # not shared


def test_token_bucket_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take(1, 60) for _ in range(60)] == [0.0] * 60  # a full minute's burst
    assert limiter.take(1, 60) == pytest.approx(1.0)  # then one per second
    now[0] += 0.5
    assert limiter.take(1, 60) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take(1, 60) == 0.0
