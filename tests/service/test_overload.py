"""Bounded work: anonymous callers are rate-limited per address, and a full server says 503 at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from index.catalog import Catalog
from service.keys import create_key
from tests.service.conftest import assert_error


def test_anonymous_callers_are_rate_limited_per_address(serve, built_index):
    key, _ = create_key(Catalog(built_index["database_url"]), "not-anonymous", ["read"])
    with serve(anonymous_rate_limit_per_minute=3) as c:
        for _ in range(3):
            assert c.post("/v1/search/text", json={"query": "cat"}).status_code == 200
        r = c.post("/v1/search/text", json={"query": "cat"})
        assert_error(r, 429, "too_many_requests")
        assert int(r.headers["Retry-After"]) >= 1
        assert_error(c.get("/v1/items/1"), 429, "too_many_requests")  # one bucket per address, every route
        # a key has its own bucket; probes are never limited
        assert c.post("/v1/search/text", json={"query": "cat"},
                      headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/healthz").status_code == 200
    with serve(anonymous_rate_limit_per_minute=0) as c:  # 0: off
        assert all(c.post("/v1/search/text", json={"query": "cat"}).status_code == 200 for _ in range(5))


def test_past_max_concurrent_requests_the_server_answers_503_at_once(serve, monkeypatch):
    with serve(max_concurrent_requests=1) as c:
        catalog = c.app.state.resources.catalog
        real, entered, release = catalog.get_many, threading.Event(), threading.Event()

        def slow(ids):
            entered.set()
            assert release.wait(30)
            return real(ids)

        monkeypatch.setattr(catalog, "get_many", slow)
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(c.post, "/v1/search/text", json={"query": "cat"})
            assert entered.wait(30)
            r = c.post("/v1/search/text", json={"query": "dog"})
            assert_error(r, 503, "overloaded")
            assert r.headers["Retry-After"] == "1"
            assert c.get("/healthz").status_code == 200  # probes still answer
            assert c.get("/metrics").status_code == 200
            release.set()
            assert busy.result(30).status_code == 200
        monkeypatch.undo()
        assert c.post("/v1/search/text", json={"query": "dog"}).status_code == 200  # the slot is free again
