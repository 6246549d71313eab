"""service.client.Client against the app (through the test client) and against a real uvicorn."""

import pytest
from PIL import Image

from service.client import ApiError, Client


@pytest.fixture
def api(client):
    return Client(http=client)


def test_every_call_returns_the_typed_response(api, built_index, sample_png):
    health = api.health()
    assert health.count == built_index["count"] and health.can_encode_text
    assert api.ready().catalog_items == built_index["count"]

    hits = api.search_text("dog face", k=4).results
    assert len(hits) == 4 and hits[0].score >= hits[-1].score
    page2 = api.search_text("dog face", k=2, offset=2).results
    assert [h.id for h in page2] == [h.id for h in hits[2:]]

    by_path = api.search_image(sample_png, k=3).results
    assert by_path[0].source == sample_png.name
    assert [h.id for h in api.search_image(sample_png.read_bytes(), k=3).results] == [h.id for h in by_path]
    assert api.search_image(Image.open(sample_png), k=1).results[0].id == by_path[0].id

    more = api.similar(by_path[0].id, k=2).results
    assert [h.id for h in more] == [h.id for h in by_path[1:3]]

    item = api.item(by_path[0].id)
    assert item.source == sample_png.name and item.image_url.endswith("/image")
    assert api.item_image(item.id) == sample_png.read_bytes()

    labels = api.classify(sample_png, ["animal", "flag", "food"]).labels
    assert sorted(p.label for p in labels) == ["animal", "flag", "food"]
    assert abs(sum(p.probability for p in labels) - 1.0) < 1e-6


def test_errors_carry_status_and_code(api, tmp_path):
    with pytest.raises(ApiError) as err:
        api.search_text("   ")
    assert (err.value.status, err.value.code) == (422, "empty_query")
    with pytest.raises(ApiError) as err:
        api.item(10**9)
    assert (err.value.status, err.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as err:
        api.search_image(b"not an image at all")
    assert err.value.status == 415 and err.value.code == "not_an_image"
    with pytest.raises(TypeError):
        api.search_image(12345)


def test_over_real_http(live_server, sample_png):
    with Client(live_server, timeout=30) as api:
        assert api.search_image(sample_png, k=1).results[0].source == sample_png.name
        assert len(api.search_text("red heart", k=3).results) == 3
