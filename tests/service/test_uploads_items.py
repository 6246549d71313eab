"""POST /v1/items: an uploaded image is searchable by the next query and lands in the next index version."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index.catalog import Catalog
from index.job import BuildConfig, build
from index.verify import verify
from index.version import open_current
from service.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import SAMPLE, copy_sample, sample_rows, wait_for
from tests.service.conftest import assert_error


@pytest.fixture
def served(micro_encoder, tmp_path, request):
    rows = sample_rows()
    folder = tmp_path / "imgs"
    copy_sample(rows[:getattr(request, "param", {}).get("items", 8)], folder)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=folder, out=tmp_path / "index", database_url=url,
                      workers=0, progress=False, factory=getattr(request, "param", {}).get("factory", "auto")))
    key, _ = create_key(Catalog(url), "uploader", ["read", "write"])
    settings = Settings(encoder=str(micro_encoder), index=tmp_path / "index", database_url=url,
                        publish_delay=0.3, reload_interval=0.2)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        yield client, url, tmp_path, rows


def test_an_upload_is_found_at_once_then_published(served):
    client, url, tmp_path, rows = served
    new = SAMPLE / rows[300]["file"]  # not in the index
    data = new.read_bytes()
    before = client.get("/healthz").json()
    r = client.post("/v1/items", files={"file": ("x.png", data, "image/png")},
                    data={"metadata": json.dumps({"album": "new", "name": rows[300]["name"]})})
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["metadata"] == {"album": "new", "name": rows[300]["name"]}
    assert client.get(item["image_url"]).content == data

    # the very next query finds it, before any new version exists
    hits = client.post("/v1/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "3"}).json()
    assert hits["results"][0]["id"] == item["id"] and hits["results"][0]["score"] > 0.9999
    filtered = client.post("/v1/search/text", json={"query": "x", "k": 5, "filter": {"album": "new"}}).json()
    assert [h["id"] for h in filtered["results"]] == [item["id"]]

    # then a new version holds it, and index and catalog agree
    assert wait_for(lambda: client.get("/healthz").json()["index_version"] != before["index_version"])
    assert client.get("/healthz").json()["count"] == before["count"] + 1
    again = client.post("/v1/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "3"}).json()
    assert again["results"][0]["id"] == item["id"]
    assert len({h["id"] for h in again["results"]}) == 3  # not listed twice (fresh index and version)
    assert verify(tmp_path / "index", url).ok

    # the same bytes again: the same item, its metadata replaced
    same = client.post("/v1/items", files={"file": ("y.png", data, "image/png")},
                       data={"metadata": json.dumps({"album": "renamed"})})
    assert same.status_code == 200 and same.json()["id"] == item["id"]
    assert same.json()["metadata"] == {"album": "renamed"}


@pytest.mark.parametrize("served", [{"factory": "HNSW16", "items": 24}], indirect=True)
def test_uploads_and_deletes_update_the_index_version_without_a_rebuild(served):
    client, url, tmp_path, rows = served
    before = client.get("/healthz").json()
    data = (SAMPLE / rows[300]["file"]).read_bytes()
    item = client.post("/v1/items", files={"file": ("x.png", data, "image/png")}).json()
    hits = client.post("/v1/search/text", json={"query": "face", "k": 3}).json()["results"]
    doomed = [h["id"] for h in hits if h["id"] != item["id"]][:2]
    for i in doomed:
        assert client.delete(f"/v1/items/{i}").status_code == 204
    assert wait_for(lambda: client.get("/healthz").json()["count"] == before["count"] - 1)
    version = client.get("/healthz").json()["index_version"]
    manifest = json.loads((tmp_path / "index" / "versions" / version / "manifest.json").read_text())
    assert manifest["factory"] == "HNSW16" and "update" in manifest and "built_because" not in manifest  # updated
    assert manifest["tombstones"] == 2 and manifest["stored"] == before["count"] + 1
    served = open_current(tmp_path / "index")
    assert served.name == version and item["id"] in served.ids() and not set(served.ids()) & set(doomed)
    _, found = served.search(np.stack([served.index.index.reconstruct(int(p)) for p in served.tombstones]), 1)
    assert not set(found[:, 0].tolist()) & set(doomed)  # the deleted vectors themselves do not find their items
    assert verify(tmp_path / "index", url).ok


def test_upload_errors(served):
    client, _, _, rows = served
    png = (SAMPLE / rows[0]["file"]).read_bytes()
    assert_error(client.post("/v1/items", files={"file": ("x.png", b"nope", "image/png")}), 415, "not_an_image")
    assert_error(client.post("/v1/items", files={"file": ("x.png", png[:200], "image/png")}), 400, "bad_image")
    assert_error(client.post("/v1/items", files={"file": ("x.png", png, "image/png")}, data={"metadata": "[1]"}),
                 422, "validation_error")
    assert_error(client.post("/v1/items", files={"file": ("x.png", png, "image/png")}, data={"metadata": "{"}),
                 422, "validation_error")
    assert_error(client.post("/v1/items", files={"file": ("x.png", png, "image/png")},
                             headers={"Authorization": ""}), 401, "unauthorized")
