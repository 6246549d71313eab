"""GET /v1/items/{id}/image serves only files under the indexed roots or the upload folder, never through a
symlink that leaves them, with the image's own content type and ``nosniff``; results name no server path."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from tests.conftest import SAMPLE, sample_rows

pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)  # files, not the database


@pytest.fixture
def served(deployment):
    with deployment.serve() as client:
        hits = client.post("/v1/search/text", json={"query": "x", "k": 8}).json()["results"]
        yield deployment, client, {h["id"]: h for h in hits}


def _item_of(client, deployment, row) -> int:
    hits = client.post("/v1/search/text", json={"query": "x", "k": 8,
                                                "filter": {"code": row["code"], "vendor": row["vendor"]}}).json()
    return hits["results"][0]["id"]


def test_an_indexed_file_is_served_with_its_own_type_and_nosniff(served):
    deployment, client, _ = served
    row = deployment.rows[0]
    item_id = _item_of(client, deployment, row)
    r = client.get(f"/v1/items/{item_id}/image")
    assert r.status_code == 200 and r.content == deployment.path_of(row).read_bytes()
    assert r.headers["content-type"] == "image/png" and r.headers["x-content-type-options"] == "nosniff"
    # JPEG bytes behind a .png name: served as what they are
    buf = io.BytesIO()
    Image.open(deployment.path_of(row)).convert("RGB").save(buf, format="JPEG")
    deployment.path_of(row).write_bytes(buf.getvalue())
    r = client.get(f"/v1/items/{item_id}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    # and something that is no image at all is not served
    deployment.path_of(row).write_bytes(b"<html><script>alert(1)</script></html>")
    assert client.get(f"/v1/items/{item_id}/image").status_code == 404


def test_a_file_swapped_for_a_symlink_out_of_its_root_is_not_served(served, tmp_path):
    deployment, client, _ = served
    secret = tmp_path / "secret.png"  # outside every indexed root (a real PNG: the check is where, not what)
    secret.write_bytes((SAMPLE / sample_rows()[500]["file"]).read_bytes())
    row, other = deployment.rows[0], deployment.rows[1]
    item_id, other_id = _item_of(client, deployment, row), _item_of(client, deployment, other)
    path = deployment.path_of(row)
    path.unlink()
    path.symlink_to(secret)
    r = client.get(f"/v1/items/{item_id}/image")
    assert r.status_code == 404 and r.content != secret.read_bytes()
    assert client.head(f"/v1/items/{item_id}/image").status_code == 404
    # the indexed folder itself swapped for a symlink to a folder elsewhere holding the same names
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / deployment.path_of(other).name).write_bytes(secret.read_bytes())
    os.rename(deployment.images, tmp_path / "moved-away")
    deployment.images.symlink_to(elsewhere)
    assert client.get(f"/v1/items/{other_id}/image").status_code == 404


def test_uploads_are_served_from_the_upload_folder_only(served, tmp_path):
    deployment, client, _ = served
    data = (SAMPLE / sample_rows()[300]["file"]).read_bytes()
    item = client.post("/v1/items", files={"file": ("u.png", data, "image/png")}).json()
    r = client.get(item["image_url"])
    assert r.status_code == 200 and r.content == data and r.headers["x-content-type-options"] == "nosniff"
    stored = next(p for p in deployment.uploads.rglob("*.png"))
    secret = tmp_path / "secret.png"
    secret.write_bytes((SAMPLE / sample_rows()[500]["file"]).read_bytes())
    stored.unlink()
    stored.symlink_to(secret)
    assert client.get(item["image_url"]).status_code == 404


def test_results_do_not_name_server_paths(served):
    deployment, client, hits = served
    root = str(deployment.root)
    for hit in hits.values():
        assert not hit["source"].startswith("/") and root not in hit["source"], hit
        item = client.get(f"/v1/items/{hit['id']}").json()
        assert not item["source"].startswith("/") and root not in item["source"], item
    data = (SAMPLE / sample_rows()[300]["file"]).read_bytes()
    uploaded = client.post("/v1/items", files={"file": ("u.png", data, "image/png")}).json()
    assert not uploaded["source"].startswith("/") and root not in uploaded["source"], uploaded
