"""Metadata filters: every operator, and a filtered search returns k results whenever k items match."""

import json

import pytest
from fastapi.testclient import TestClient

from index.catalog import Catalog
from index.job import BuildConfig, build
from service.app import create_app
from service.errors import ApiError
from service.filters import compile_filter
from service.settings import Settings
from tests.conftest import sample_rows, write_manifest
from tests.service.conftest import assert_error


def test_operators():
    meta = {"vendor": "google", "rank": 7, "added": "2026-03-01", "tags": ["dog", "pet"], "flag": True}
    match = lambda spec: compile_filter(spec)(meta)  # noqa: E731
    assert match({"vendor": "google"}) and not match({"vendor": "twitter"})
    assert match({"vendor": ["twitter", "google"]}) and not match({"vendor": {"nin": ["google"]}})
    assert match({"tags": "pet"}) and match({"tags": ["cat", "dog"]}) and not match({"tags": {"ne": "dog"}})
    assert match({"rank": {"gte": 7, "lt": 8}}) and not match({"rank": {"gt": 7}})
    assert match({"added": {"gte": "2026-01-01", "lt": "2026-12-31T23:59:59Z"}})
    assert not match({"added": {"lt": "2026-02-01"}})
    assert not match({"rank": {"gte": "2026-01-01"}}) and not match({"vendor": {"gte": 1}})  # types never mix
    assert not match({"missing": {"gte": 0}}) and match({"missing": None}) and match({"flag": True})
    assert match({"vendor": "google", "rank": {"lte": 7}}) and not match({"vendor": "google", "rank": {"lte": 6}})
    assert compile_filter(None) is None and compile_filter({}) is None
    for bad in [{"rank": {"between": [1, 2]}}, {"rank": {"gte": "soon"}}, {"rank": {}}, {"v": {"in": "x"}},
                {"v": {"eq": {"nested": 1}}}, ["not", "an", "object"]]:
        with pytest.raises(ApiError) as err:
            compile_filter(bad)
        assert err.value.status == 422


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, micro_encoder):
    """24 sample images whose manifest adds a number (rank) and a date (added)."""
    root = tmp_path_factory.mktemp("ranked")
    both_vendors = sample_rows()[:12] + sample_rows()[-12:]
    assert {r["vendor"] for r in both_vendors} == {"google", "twitter"}
    rows = [{**r, "rank": i, "added": f"2026-{1 + i % 12:02d}-15"} for i, r in enumerate(both_vendors)]
    manifest = write_manifest(root / "m.jsonl", rows)
    url = f"sqlite:///{root / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=manifest, out=root / "index", database_url=url, workers=0,
                      progress=False))
    settings = Settings(encoder=str(micro_encoder), index=root / "index", database_url=url)
    with TestClient(create_app(settings)) as client:
        yield client, Catalog(url)


def _matching(catalog, predicate):
    return {i for i, item in catalog.get_many(range(1, 1000)).items() if predicate(item.meta)}


@pytest.mark.parametrize("spec", [
    {"vendor": "twitter"},
    {"rank": {"gte": 20}},  # 4 items: fewer than k, so all of them
    {"added": {"gte": "2026-06-01", "lt": "2026-09-01"}},
    {"vendor": "google", "rank": {"lt": 10}},
])
def test_filtered_searches_return_k_or_every_match(ranked, spec):
    client, catalog = ranked
    expected = _matching(catalog, compile_filter(spec))
    assert expected, "the filter should match something"
    r = client.post("/v1/search/text", json={"query": "face", "k": 8, "filter": spec})
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["results"]]
    assert len(ids) == min(8, len(expected)) and set(ids) <= expected
    scores = [h["score"] for h in r.json()["results"]]
    assert scores == sorted(scores, reverse=True)


def test_every_search_form_takes_a_filter(ranked, sample_png):
    client, catalog = ranked
    spec = {"vendor": "twitter"}
    twitter = _matching(catalog, compile_filter(spec))
    image = client.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")},
                        data={"k": "5", "filter": json.dumps(spec)}).json()["results"]
    first = client.post("/v1/search/text", json={"query": "face", "k": 1}).json()["results"][0]["id"]
    similar = client.post("/v1/search/similar", json={"id": first, "k": 5, "filter": spec}).json()["results"]
    for hits in (image, similar):
        assert len(hits) == 5 and {h["id"] for h in hits} <= twitter
    assert_error(client.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")},
                             data={"filter": "{not json"}), 422, "validation_error")
    assert_error(client.post("/v1/search/text", json={"query": "x", "filter": {"rank": {"near": 3}}}),
                 422, "validation_error")


@pytest.mark.parametrize("factory", ["HNSW8", "IVF8,Flat"])
def test_approximate_indexes_still_return_every_match(micro_encoder, tmp_path, factory):
    """A graph returns fewer than k for large k and IVF probes a few lists; a selective filter must
    still get every match (the widened search visits every vector)."""
    rows = [{**r, "rank": i} for i, r in enumerate(sample_rows()[:400])]
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=write_manifest(tmp_path / "m.jsonl", rows),
                      out=tmp_path / "index", database_url=url, workers=0, progress=False, factory=factory,
                      target_recall=0.5))
    catalog = Catalog(url)
    with TestClient(create_app(Settings(encoder=str(micro_encoder), index=tmp_path / "index",
                                        database_url=url))) as client:
        for spec, k in [({"rank": {"gte": 390}}, 10), ({"rank": {"lt": 100}}, 100)]:
            expected = _matching(catalog, compile_filter(spec))
            hits = client.post("/v1/search/text", json={"query": "face", "k": k, "filter": spec}).json()["results"]
            assert len(hits) == k == len(expected) and {h["id"] for h in hits} == expected
    catalog.dispose()
