"""POST /v1/classify: zero-shot labels with the encoder's text tower."""

from __future__ import annotations

import dataclasses
import math

from tests.service.conftest import assert_error


def classify(client, path, **data):
    return client.post("/v1/classify", files={"file": ("q.png", path.read_bytes(), "image/png")}, data=data)


def test_every_label_with_probabilities_summing_to_one_best_first(client, sample_png):
    labels = ["keycap", "dog", "flag", "heart", "car"]
    r = classify(client, sample_png, labels=labels)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(x["label"] for x in body["labels"]) == sorted(labels)
    probs = [x["probability"] for x in body["labels"]]
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-6)
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert body["templates"] == client.app.state.settings.default_templates


def test_probabilities_follow_the_encoders_logits(client, sample_png):
    """The route's answer equals softmax(logit_scale * image @ weights.T) computed here from the encoder."""
    import numpy as np
    from PIL import Image

    res = client.app.state.resources
    labels, templates = ["dog", "cat"], ["a photo of a {}."]
    body = classify(client, sample_png, labels=labels, templates=templates).json()
    w = res.encoder.zero_shot_weights(labels, templates)  # (2, dim)
    v = res.encoder.encode_images([Image.open(sample_png)])  # (1, dim)
    logits = res.encoder.logit_scale * (v @ w.T)[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = {x["label"]: x["probability"] for x in body["labels"]}
    assert np.allclose([got["dog"], got["cat"]], expected, atol=1e-5)


def test_comma_separated_and_repeated_labels_agree(client, sample_png):
    a = classify(client, sample_png, labels="dog, cat ,flag").json()["labels"]
    b = classify(client, sample_png, labels=["dog", "cat", "flag"]).json()["labels"]
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert [x["probability"] for x in a] == [x["probability"] for x in b]
    dedup = classify(client, sample_png, labels=["dog", "dog", "cat"]).json()["labels"]
    assert sorted(x["label"] for x in dedup) == ["cat", "dog"]


def test_one_label_is_certain(client, sample_png):
    body = classify(client, sample_png, labels="dog").json()
    assert body["labels"] == [{"label": "dog", "probability": 1.0}]


def test_label_weights_are_cached(client, sample_png):
    cache = client.app.state.resources.label_weights
    labels = ["unusual label one", "unusual label two"]
    classify(client, sample_png, labels=labels)
    size = len(cache)
    classify(client, sample_png, labels=labels)
    assert len(cache) == size
    classify(client, sample_png, labels=labels, templates=["{} emoji"])
    assert len(cache) == size + 1


def test_custom_templates_and_bad_ones(client, sample_png):
    r = classify(client, sample_png, labels="dog,cat", templates=["an emoji of a {}, drawn", "{}"])
    assert r.status_code == 200, r.text
    assert r.json()["templates"] == ["an emoji of a {}, drawn", "{}"]
    for bad in ("no slot", "{} and {}", "{name}"):
        error = assert_error(classify(client, sample_png, labels="dog", templates=[bad]), 422, "validation_error")
        assert error["detail"][0]["loc"][:2] == ["body", "templates"]


def test_no_labels_or_too_many_is_422(serve, client, sample_png):
    assert_error(classify(client, sample_png), 422, "validation_error")
    assert_error(classify(client, sample_png, labels=" , ,"), 422, "validation_error")
    with serve(max_labels=3) as c:
        error = assert_error(classify(c, sample_png, labels="a,b,c,d"), 422, "validation_error")
        assert error["detail"][0]["loc"] == ["body", "labels"]
        assert classify(c, sample_png, labels="a,b,c").status_code == 200


def test_classify_upload_errors(client, sample_png):
    r = client.post("/v1/classify", files={"file": ("a.txt", b"hello", "text/plain")}, data={"labels": "dog"})
    assert_error(r, 415, "unsupported_media_type")
    truncated = sample_png.read_bytes()[:200]
    r = client.post("/v1/classify", files={"file": ("a.png", truncated, "image/png")}, data={"labels": "dog"})
    assert_error(r, 400, "bad_image")
    assert classify(client, sample_png, labels="dog").status_code == 200


def test_image_only_encoder_answers_400_no_text_tower(serve, sample_png):
    with serve() as c:
        res = c.app.state.resources
        image_only = dataclasses.replace(res.encoder, text_tower=None, tokenizer=None, model=None)
        c.app.state.resources = dataclasses.replace(res, encoder=image_only)
        assert_error(classify(c, sample_png, labels="dog"), 400, "no_text_tower")
        assert_error(c.post("/v1/search/text", json={"query": "dog"}), 400, "no_text_tower")
        assert c.get("/healthz").json()["can_encode_text"] is False
        r = c.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
