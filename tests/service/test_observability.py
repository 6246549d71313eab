"""/metrics in Prometheus text format, and a request id on every response and log line."""

import json
import logging

from prometheus_client.parser import text_string_to_metric_families


def _samples(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics_count_requests_by_route_template_and_encoder_batches(serve, built_index, sample_png):
    with serve() as client:
        client.post("/v1/search/text", json={"query": "dog", "k": 3})
        client.post("/v1/search/text", json={"query": "cat", "k": 3})
        client.get("/v1/items/1")
        client.get("/v1/items/999999")  # 404
        client.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")})
        samples = _samples(client)

    def count(route, status, method="POST"):
        key = ("lookalike_http_request_duration_seconds_count",
               tuple(sorted({"method": method, "route": route, "status": status}.items())))
        return samples.get(key, 0)

    assert count("/v1/search/text", "200") == 2
    assert count("/v1/items/{item_id}", "200", "GET") == 1 and count("/v1/items/{item_id}", "404", "GET") == 1
    assert count("/v1/search/image", "200") == 1
    assert samples[("lookalike_encoder_batch_size_count", (("input", "texts"),))] == 2
    assert samples[("lookalike_encoder_batch_size_count", (("input", "images"),))] == 1
    assert samples[("lookalike_index_vectors", ())] == built_index["count"]
    assert samples[("lookalike_catalog_items", ())] == built_index["count"]


def test_every_response_has_a_request_id_that_the_log_line_shares(client, caplog):
    with caplog.at_level(logging.INFO, logger="service.requests"):
        mine = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        fresh = client.post("/v1/search/text", json={"query": ""})  # an error response gets one too
        hostile = client.get("/healthz", headers={"X-Request-ID": "bad id\r\nwith junk"})
    assert mine.headers["x-request-id"] == "abc-123"
    assert fresh.status_code == 422 and len(fresh.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "bad id\r\nwith junk"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.requests"]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["abc-123"]["route"] == "/healthz" and by_id["abc-123"]["status"] == 200
    assert by_id[fresh.headers["x-request-id"]]["status"] == 422


def test_metrics_labels_stay_few_whatever_paths_callers_invent(serve):
    import uuid

    with serve() as client:
        def invent(n):
            for _ in range(n):
                client.get(f"/static/a/{uuid.uuid4().hex}")
                client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")
                client.post(f"/v1/search/{uuid.uuid4().hex}", json={})

        _samples(client)  # the scrape's own series
        invent(3)
        first = _samples(client)
        invent(10)
        then = _samples(client)
    assert set(first) == set(then)  # no new series: only counts grew
    routes = {dict(labels).get("route") for _, labels in then}
    assert {"/static/{path}", "unmatched"} <= routes
    assert not any("/static/a/" in r or len(r) > 60 for r in routes if r), routes
