"""One catalog, two writers: the batch job changes only what its source owns; what a person did through
the API (an upload, an edit, a delete) outlives the job's next run. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json

from PIL import Image

from index.verify import verify
from index.version import open_current
from tests.conftest import SAMPLE, sample_rows, wait_for


def _search_ids(client, path) -> list[int]:
    r = client.post("/v1/search/image", files={"file": ("q.png", path.read_bytes(), "image/png")}, data={"k": "20"})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]


def _id_of(client, deployment, row) -> int:
    hits = client.post("/v1/search/text", json={"query": "x", "k": 20,
                                                "filter": {"code": row["code"], "vendor": row["vendor"]}}).json()
    [hit] = hits["results"]
    return hit["id"]


def test_an_upload_survives_a_batch_run_with_delete_missing(deployment):
    upload = SAMPLE / sample_rows()[300]["file"]  # not in the manifest
    with deployment.serve() as client:
        r = client.post("/v1/items", files={"file": ("u.png", upload.read_bytes(), "image/png")},
                        data={"metadata": json.dumps({"album": "mine"})})
        assert r.status_code == 201, r.text
        uploaded = r.json()["id"]
        gone = deployment.rows[-1]  # removed from the manifest: the job deletes it, and only it
        deployment.write_manifest(deployment.rows[:-1])
        report = deployment.build(delete_missing=True)
        assert report.deleted == 1
        assert client.get(f"/v1/items/{uploaded}").status_code == 200
        assert client.get(f"/v1/items/{uploaded}").json()["metadata"] == {"album": "mine"}
        assert _search_ids(client, upload)[0] == uploaded
        assert client.post("/v1/search/text", json={"query": "x", "k": 20, "filter": {"code": gone["code"],
                                                                                     "vendor": gone["vendor"]}}
                           ).json()["results"] == []
    assert uploaded in open_current(deployment.index).ids().tolist()  # the job published it too
    assert verify(deployment.index, deployment.url).ok


def test_an_item_deleted_through_the_api_stays_deleted_after_a_batch_run(deployment):
    victim = deployment.rows[0]
    with deployment.serve() as client:
        doomed = _id_of(client, deployment, victim)
        assert client.delete(f"/v1/items/{doomed}").status_code == 204
        for delete_missing in (False, True):
            report = deployment.build(delete_missing=delete_missing)
            assert report.deleted == 0
            assert client.get(f"/v1/items/{doomed}").status_code == 404
            assert doomed not in _search_ids(client, deployment.path_of(victim))
            assert doomed not in open_current(deployment.index).ids().tolist()
            assert verify(deployment.index, deployment.url).ok
        # documented: new bytes under the deleted item's name are a new picture, indexed again
        Image.open(SAMPLE / sample_rows()[200]["file"]).save(deployment.path_of(victim))
        deployment.build()
        assert client.get(f"/v1/items/{doomed}").status_code == 200
        assert wait_for(lambda: _search_ids(client, deployment.path_of(victim))[0] == doomed, timeout=10)


def test_a_patch_survives_a_batch_run(deployment):
    row = deployment.rows[1]
    with deployment.serve() as client:
        item_id = _id_of(client, deployment, row)
        r = client.patch(f"/v1/items/{item_id}", json={"metadata": {"name": "my name", "album": "kept",
                                                                    "category": None}})
        assert r.status_code == 200, r.text
        edited = r.json()["metadata"]
        assert edited["name"] == "my name" and "category" not in edited
        # the source changes a key the person edited, one they removed, and one they did not touch
        rows = [{**r, "name": "source name", "category": "source cat", "subcategory": "new sub"} if r is row else r
                for r in deployment.rows]
        deployment.write_manifest(rows)
        for delete_missing in (False, True):
            deployment.build(delete_missing=delete_missing)
            meta = client.get(f"/v1/items/{item_id}").json()["metadata"]
            assert meta["name"] == "my name" and meta["album"] == "kept"  # the person's edits win
            assert "category" not in meta  # and so does a removal
            assert meta["subcategory"] == "new sub"  # the source still updates what nobody edited
        hits = client.post("/v1/search/text", json={"query": "x", "k": 5, "filter": {"album": "kept"}}).json()
        assert [h["id"] for h in hits["results"]] == [item_id]
    assert verify(deployment.index, deployment.url).ok
