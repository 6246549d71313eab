"""Several collections side by side: a SimCLR one and a CLIP one, each with its encoder and index."""

import pytest
from fastapi.testclient import TestClient

from index.job import BuildConfig, build
from service.app import create_app
from service.settings import Settings
from tests.conftest import REPO, copy_sample, running_service, sample_rows
from tests.service.conftest import assert_error


@pytest.fixture(scope="module")
def two(tmp_path_factory, micro_encoder, small_manifest):
    """One catalog; collection 'clip' indexed by the micro CLIP, 'simclr' by a tiny SimCLR encoder."""
    from training.loop import LoopConfig
    from training.methods.simclr import SimCLRConfig
    from training.runner import run

    root = tmp_path_factory.mktemp("two")
    simclr = root / "simclr.safetensors"
    run(SimCLRConfig(data=small_manifest, out=simclr, image_size=32, batch_size=32, workers=0,
                     backbone={"name": "small-cnn", "width": 8, "depth": 2}, loop=LoopConfig(steps=2, progress=False)))
    folder = root / "imgs"
    copy_sample(sample_rows()[:10], folder)
    url = f"sqlite:///{root / 'catalog.db'}"
    for name, encoder in (("clip", micro_encoder), ("simclr", simclr)):
        build(BuildConfig(encoder=str(encoder), source=folder, out=root / name, database_url=url, collection=name,
                          workers=0, progress=False))
    return {"clip": (str(micro_encoder), root / "clip"), "simclr": (str(simclr), root / "simclr"), "url": url,
            "query": folder / f"{sample_rows()[3]['vendor']}-{sample_rows()[3]['code']}.png"}


def test_a_simclr_and_a_clip_collection_served_together(two):
    settings = Settings(encoder=two["clip"][0], index=two["clip"][1], database_url=two["url"], collection="clip",
                        extra_collections={"simclr": {"encoder": two["simclr"][0], "index": two["simclr"][1]}})
    png = two["query"].read_bytes()
    with TestClient(create_app(settings)) as client:
        listed = client.get("/v1/collections").json()
        assert [(c["name"], c["default"], c["encoder_kind"], c["can_encode_text"], c["count"]) for c in listed] == [
            ("clip", True, "clip", True, 10), ("simclr", False, "simclr", False, 10)]
        for collection in ("clip", "simclr"):
            r = client.post(f"/v1/search/image?collection={collection}",
                            files={"file": ("q.png", png, "image/png")}, data={"k": "3"})
            assert r.status_code == 200, r.text
            top = r.json()["results"][0]
            assert top["source"] == two["query"].name and top["collection"] == collection
            assert client.get(f"/v1/items/{top['id']}?collection={collection}").status_code == 200
        clip_ids = {h["id"] for h in client.post("/v1/search/text", json={"query": "face", "k": 10}).json()["results"]}
        simclr_top = client.post("/v1/search/image?collection=simclr", files={"file": ("q.png", png, "image/png")},
                                 data={"k": "10"}).json()["results"]
        assert not clip_ids & {h["id"] for h in simclr_top}  # each collection has its own items
        assert_error(client.post("/v1/search/text?collection=simclr", json={"query": "face"}), 400, "no_text_tower")
        assert_error(client.post("/v1/search/text?collection=nope", json={"query": "face"}), 404,
                     "unknown_collection")
        # an item of one collection is not found through the other
        assert_error(client.get(f"/v1/items/{simclr_top[0]['id']}?collection=clip"), 404, "not_found")


def test_the_cli_serves_extra_collections_and_checks_them(two):
    import subprocess
    import sys

    import httpx

    with running_service(two["clip"][0], two["clip"][1], two["url"],
                         settings={"collection": "clip", "extra_collections":
                                   f'{{"simclr": {{"encoder": "{two["simclr"][0]}", "index": "{two["simclr"][1]}"}}}}'}
                         ) as base:
        assert [c["name"] for c in httpx.get(f"{base}/v1/collections").json()] == ["clip", "simclr"]
    # an extra collection whose encoder did not build its index: one line, exit 2
    bad = subprocess.run([sys.executable, "-m", "service", "--encoder", two["clip"][0], "--index", str(two["clip"][1]),
                          "--database-url", two["url"], "--collection", "clip",
                          "--add-collection", "simclr", two["clip"][0], str(two["simclr"][1])],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mismatch" in bad.stderr and "Traceback" not in bad.stderr
