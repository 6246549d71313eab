"""Items deleted from the catalog vanish from the API at once, before any new index version."""

from fastapi.testclient import TestClient

from index.catalog import Catalog
from index.job import BuildConfig, build
from service.app import create_app
from service.settings import Settings
from tests.conftest import copy_sample, sample_rows
from tests.service.conftest import assert_error


def test_deleted_items_are_hidden_and_searches_still_return_k(micro_encoder, tmp_path):
    rows = sample_rows()[:12]
    folder = tmp_path / "imgs"
    copy_sample(rows, folder)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=folder, out=tmp_path / "index", database_url=url,
                      workers=0, progress=False))
    settings = Settings(encoder=str(micro_encoder), index=tmp_path / "index", database_url=url)
    with TestClient(create_app(settings)) as client:
        query = {"query": "grinning face", "k": 5}
        before = [hit["id"] for hit in client.post("/v1/search/text", json=query).json()["results"]]
        assert len(before) == 5
        doomed = before[:3]  # the three best matches
        assert Catalog(url).delete("default", doomed) == doomed

        after = client.post("/v1/search/text", json=query).json()["results"]
        ids = [hit["id"] for hit in after]
        assert len(ids) == 5 and not set(ids) & set(doomed)  # still k, none of the deleted
        assert ids[:2] == before[3:]  # the survivors keep their order
        assert_error(client.get(f"/v1/items/{doomed[0]}"), 404, "not_found")
        assert_error(client.get(f"/v1/items/{doomed[0]}/image"), 404, "not_found")
        everything = client.post("/v1/search/text", json={"query": "face", "k": 12}).json()["results"]
        assert len(everything) == 9  # all that is left, not padded
