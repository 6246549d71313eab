"""Batched forms: several searches (text, base64 image, id, vector) or classifications in one call."""

import base64

from service.client import Client
from tests.service.conftest import assert_error


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_a_batch_answers_each_query_like_its_own_route(client, sample_png, micro_encoder):
    from PIL import Image

    from training.encoder import load_encoder

    vector = load_encoder(micro_encoder).encode_images([Image.open(sample_png)])[0].tolist()
    image_hit = client.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")},
                            data={"k": "4"}).json()["results"]
    body = {"queries": [{"text": "dog face"}, {"image": b64(sample_png)}, {"id": image_hit[0]["id"]},
                        {"vector": vector}, {"image": "data:image/png;base64," + b64(sample_png)}], "k": 4}
    r = client.post("/v1/search/batch", json=body)
    assert r.status_code == 200, r.text
    responses = r.json()["responses"]
    assert len(responses) == 5
    text_alone = client.post("/v1/search/text", json={"query": "dog face", "k": 4}).json()["results"]
    assert [h["id"] for h in responses[0]["results"]] == [h["id"] for h in text_alone]
    assert [h["id"] for h in responses[1]["results"]] == [h["id"] for h in image_hit]
    assert [h["id"] for h in responses[2]["results"]] == [h["id"] for h in image_hit[1:]] + [
        responses[2]["results"][-1]["id"]]  # more like this: the image's neighbours without itself
    assert responses[3]["results"][0]["id"] == image_hit[0]["id"]
    assert [h["id"] for h in responses[4]["results"]] == [h["id"] for h in image_hit]


def test_batch_errors_name_the_query(client, sample_png):
    err = assert_error(client.post("/v1/search/batch", json={"queries": [{"text": "a", "id": 3}]}), 422,
                       "validation_error")
    assert err["detail"][0]["loc"][:3] == ["body", "queries", 0]
    assert_error(client.post("/v1/search/batch", json={"queries": []}), 422, "validation_error")
    assert_error(client.post("/v1/search/batch", json={"queries": [{"image": "%%%"}]}), 422, "validation_error")
    truncated = {"queries": [{"text": "ok"}, {"image": b64(sample_png)[:80]}]}
    bad = assert_error(client.post("/v1/search/batch", json=truncated), 400, "bad_image")
    assert bad["detail"]["image"] == "body.queries.1.image"
    assert_error(client.post("/v1/search/batch", json={"queries": [{"text": "x"}] * 33}), 422, "validation_error")


def test_classify_batch(client, sample_png, indexed_rows):
    other = indexed_rows[5]["file"]
    from pathlib import Path

    r = client.post("/v1/classify/batch", json={"images": [b64(sample_png), b64(Path(other))],
                                                "labels": ["animal", "flag", "food"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    alone = Client(http=client).classify(sample_png, ["animal", "flag", "food"])
    assert [(p["label"], round(p["probability"], 5)) for p in results[0]["labels"]] == [
        (p.label, round(p.probability, 5)) for p in alone.labels]
    assert len(results) == 2 and all(abs(sum(p["probability"] for p in x["labels"]) - 1) < 1e-6 for x in results)
    assert_error(client.post("/v1/classify/batch", json={"images": [b64(sample_png)], "labels": []}), 422,
                 "validation_error")
