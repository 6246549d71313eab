"""``GET /v1/collections/{name}/facets`` and ``/encoder`` (service/routes/about.py)."""

from __future__ import annotations

from collections import Counter

from tests.service.conftest import assert_error


def test_facets_are_the_few_valued_metadata_keys_with_counts(client, indexed_rows):
    r = client.get("/v1/collections/default/facets")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["collection"] == "default" and body["scanned"] == len(indexed_rows) and body["complete"] is True
    facets = {f["key"]: f["values"] for f in body["facets"]}
    for key in ("vendor", "category"):
        expected = Counter(row[key] for row in indexed_rows)
        assert {v["value"]: v["count"] for v in facets[key]} == expected
        counts = [v["count"] for v in facets[key]]
        assert counts == sorted(counts, reverse=True)
    # names, codes and paths have a value per emoji or per image: not something to choose from
    assert not {"name", "code", "file"} & set(facets)


def test_facets_are_bounded(serve, indexed_rows):
    from service.routes.about import facets_of

    with serve() as c:
        res = c.app.state.resources
        part = facets_of(res, scan=10, max_values=6)
        assert part.scanned == 10 and part.complete is False
        assert all(len(f.values) <= 6 for f in part.facets)
    # the first ten items (ids follow the manifest order): the keys with 2 to 6 values among them (one vendor: none)
    first = indexed_rows[:10]
    expected = {key: Counter(str(r[key]) for r in first) for key in first[0]
                if isinstance(first[0][key], str) and 2 <= len({r[key] for r in first}) <= 6}
    assert set(expected) == {"category"}
    assert {f.key: {str(v.value): v.count for v in f.values} for f in part.facets} == expected


def test_encoder_route_describes_the_run(client, built_index):
    r = client.get("/v1/collections/default/encoder")
    assert r.status_code == 200, r.text
    info = r.json()
    health = client.get("/healthz").json()
    assert info["kind"] == "clip" and info["fingerprint"] == health["encoder_fingerprint"]
    assert info["can_encode_text"] is True and info["dim"] == 32
    assert info["preprocess"]["size"] == 32
    t = info["training"]
    assert t["method"] == "clip" and t["model"] == "lookalike-micro"
    assert t["steps"] == 5 and t["batch_size"] == 32 and t["examples"] == 96
    assert t["data"] == "small.jsonl"  # the file name only: no path of the training machine
    (table,) = info["quality"]
    assert table["columns"] == ["encoder", "R@1", "R@5", "R@10"]
    assert [row[0] for row in table["rows"]] == ["untrained", "trained"]
    assert all(0.0 <= x <= 1.0 for row in table["rows"] for x in row[1:])


def test_unknown_collection_is_a_404(client):
    for what in ("facets", "encoder"):
        assert_error(client.get(f"/v1/collections/nope/{what}"), 404, "unknown_collection")


def test_reads_need_a_key_when_the_server_says_so(serve):
    with serve(require_key_for_reads=True) as c:
        for what in ("facets", "encoder"):
            assert_error(c.get(f"/v1/collections/default/{what}"), 401, "unauthorized")
