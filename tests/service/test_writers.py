"""Concurrent writers on one catalog (SQLite and PostgreSQL): no 500, no lost update, nothing lost over a
restart, and the served index version only ever moves forward."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from index.catalog import Catalog, Item
from index.verify import verify
from index.version import POINTER, current_name, open_current, read_manifest
from service.state import Resources
from tests.conftest import SAMPLE, sample_rows, wait_for


def _all_at_once(n: int, call):
    """``call(i)`` for i in range(n) from n threads released together; their results in order."""
    start = threading.Barrier(n)

    def run(i):
        start.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _upload(client, path, metadata=None):
    return client.post("/v1/items", files={"file": (path.name, path.read_bytes(), "image/png")},
                       data={"metadata": json.dumps(metadata or {})})


def test_identical_uploads_at_once_make_one_item(deployment):
    image = SAMPLE / sample_rows()[300]["file"]
    with deployment.serve() as client:
        responses = _all_at_once(12, lambda i: _upload(client, image, {"n": i}))
        assert sorted(r.status_code for r in responses) == [200] * 11 + [201], [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
    catalog = Catalog(deployment.url)
    try:
        with catalog.sessions() as s:
            digest = responses[0].json()["content_hash"]
            assert s.scalar(select(func.count()).select_from(Item).where(Item.content_hash == digest)) == 1
    finally:
        catalog.dispose()


def test_concurrent_patches_of_one_item_lose_nothing(deployment):
    with deployment.serve() as client:
        item_id = client.post("/v1/search/text", json={"query": "x", "k": 1}).json()["results"][0]["id"]
        responses = _all_at_once(16, lambda i: client.patch(f"/v1/items/{item_id}",
                                                             json={"metadata": {f"k{i}": i}}))
        assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]
        meta = client.get(f"/v1/items/{item_id}").json()["metadata"]
        assert {k: meta[k] for k in meta if k.startswith("k") and k[1:].isdigit()} == {f"k{i}": i for i in range(16)}


def test_a_patch_with_a_stale_etag_is_refused(deployment):
    with deployment.serve() as client:
        item_id = client.post("/v1/search/text", json={"query": "x", "k": 1}).json()["results"][0]["id"]
        tag = client.get(f"/v1/items/{item_id}").headers["etag"]
        first = client.patch(f"/v1/items/{item_id}", json={"metadata": {"a": 1}}, headers={"If-Match": tag})
        assert first.status_code == 200 and first.headers["etag"] != tag
        stale = client.patch(f"/v1/items/{item_id}", json={"metadata": {"a": 2}}, headers={"If-Match": tag})
        assert stale.status_code == 412 and stale.json()["error"]["code"] == "precondition_failed"
        assert client.get(f"/v1/items/{item_id}").json()["metadata"]["a"] == 1
        assert client.delete(f"/v1/items/{item_id}", headers={"If-Match": tag}).status_code == 412
        assert client.delete(f"/v1/items/{item_id}", headers={"If-Match": first.headers["etag"]}).status_code == 204


def test_uploads_while_a_batch_job_commits(deployment):
    rows = sample_rows()
    more = rows[100:140]
    deployment.write_manifest(deployment.rows + more)
    for r in more:
        (deployment.images / deployment.path_of(r).name).write_bytes((SAMPLE / r["file"]).read_bytes())
    uploads = [SAMPLE / r["file"] for r in rows[300:312]]
    with deployment.serve() as client:
        job = ThreadPoolExecutor(1).submit(deployment.build, batch_size=4, delete_missing=True)
        responses = _all_at_once(len(uploads), lambda i: _upload(client, uploads[i]))
        job.result()
        assert [r.status_code for r in responses] == [201] * len(uploads), [r.text for r in responses]
        for r in responses:
            assert client.get(f"/v1/items/{r.json()['id']}").status_code == 200
        expected = len(deployment.rows) + len(more) + len(uploads)
        assert wait_for(lambda: open_current(deployment.index).count == expected, timeout=60)
    assert verify(deployment.index, deployment.url).ok


def test_uploads_not_yet_published_survive_a_restart(deployment):
    image = SAMPLE / sample_rows()[300]["file"]
    before = current_name(deployment.index)
    with deployment.serve(publish_delay=3600) as client:  # the publisher never gets to it
        uploaded = _upload(client, image).json()["id"]
    assert current_name(deployment.index) == before
    with deployment.serve(publish_delay=3600) as client:  # a restart: searchable at once
        hits = client.post("/v1/search/image", files={"file": ("q.png", image.read_bytes(), "image/png")},
                           data={"k": "3"}).json()["results"]
        assert hits[0]["id"] == uploaded and hits[0]["score"] > 0.9999
    with deployment.serve(publish_delay=0.1):  # and published by the next service that may
        assert wait_for(lambda: uploaded in open_current(deployment.index).ids().tolist(), timeout=30)
    assert verify(deployment.index, deployment.url).ok


def test_the_watcher_never_swaps_back_to_an_older_version(deployment):
    older = current_name(deployment.index)
    deployment.build(rebuild=True)
    newer = current_name(deployment.index)
    assert newer != older
    res = Resources.load(deployment.settings())
    try:
        assert res.version.name == newer
        (deployment.index / POINTER).write_text(older + "\n")  # a slow publisher's pointer landing late
        assert res.reload_if_published() is False
        assert res.version.name == newer
    finally:
        res.close()


def test_the_service_republishes_with_the_settings_a_newer_batch_version_chose(deployment):
    image = SAMPLE / sample_rows()[300]["file"]
    with deployment.serve(reload_interval=0, publish_delay=0.1) as client:  # never reloads by itself
        served = client.get("/healthz").json()["index_version"]
        deployment.build(factory="HNSW16", rebuild=True)  # the job picks another index meanwhile
        chosen = current_name(deployment.index)
        uploaded = _upload(client, image).json()["id"]
        assert wait_for(lambda: current_name(deployment.index) != chosen, timeout=30)
        manifest = read_manifest(deployment.index / "versions" / current_name(deployment.index))
        assert manifest.factory == "HNSW16" and manifest.update.base == chosen, manifest
        assert uploaded in open_current(deployment.index).ids().tolist()
        assert client.get("/healthz").json()["index_version"] not in (served, chosen)
