"""The stratified split, weighted k-NN, the linear probe and the raw-pixel baseline, on hand-checkable data."""

import numpy as np
import pytest
from PIL import Image

from training.baselines import pixel_encoder
from training.encoder import Preprocess
from training.probe import encode_labels, knn_accuracy, knn_predict, linear_probe_accuracy, stratified_split


def test_stratified_split_takes_the_fraction_of_every_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(16))
    assert sorted(labels[i] for i in test) == ["a", "a", "b"]  # round(2.0), round(1.0), singleton stays
    again, other = stratified_split(labels, 0.2, seed=0), stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(other[1], test)
    assert stratified_split(labels, 0.0)[1].size == 0
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0)


def test_knn_votes_are_weighted_by_exp_similarity_over_temperature():
    train = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], dtype=np.float32)
    labels = np.array([0, 1, 1, 0])
    q = np.array([[1, 0]], dtype=np.float32)  # similarities 1.0, 0.8, 0.6, 0.0
    assert knn_predict(train, labels, q, k=1).tolist() == [0]
    # k=3, t=1: class 0 gets e^1 = 2.72; class 1 gets e^0.8 + e^0.6 = 4.05
    assert knn_predict(train, labels, q, k=3, temperature=1.0).tolist() == [1]
    # k=3, t=0.07: e^(1/0.07) outweighs e^(0.8/0.07) + e^(0.6/0.07)
    assert knn_predict(train, labels, q, k=3, temperature=0.07).tolist() == [0]
    # k larger than the memory bank: all four vote. t=1: class 0 has e^1 + e^0 = 3.72 < 4.05 -> 1;
    # t=0.5: class 0 has e^2 + e^0 = 8.39 > e^1.6 + e^1.2 = 8.27 -> 0
    assert knn_predict(train, labels, q, k=10, temperature=1.0).tolist() == [1]
    assert knn_predict(train, labels, q, k=10, temperature=0.5).tolist() == [0]


def test_knn_matches_the_formula_on_random_data():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 5)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=30)
    queries = rng.normal(size=(7, 5)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected = []
    for q in queries:
        sims = train @ q
        top = np.argsort(-sims)[:6]
        votes = np.zeros(3)
        for i in top:
            votes[labels[i]] += np.exp(sims[i] / 0.1)
        expected.append(int(np.argmax(votes)))
    assert knn_predict(train, labels, queries, k=6, temperature=0.1, chunk=3).tolist() == expected
    assert knn_accuracy(train, labels, queries, np.array(expected), k=6, temperature=0.1) == 1.0


def test_linear_probe_separates_separable_classes_and_decay_shrinks_it_to_the_prior():
    rng = np.random.default_rng(0)
    centres = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]], dtype=np.float32)
    y = np.repeat([0, 0, 0, 1, 2], 20)  # class 0 is 60 %
    x = centres[y] + 0.3 * rng.normal(size=(len(y), 3)).astype(np.float32)
    train, test = stratified_split(y, 0.5, seed=0)
    assert linear_probe_accuracy(x[train], y[train], x[test], y[test]) == 1.0
    # an enormous L2 penalty leaves only the bias: everything is predicted as the majority class
    assert linear_probe_accuracy(x[train], y[train], x[test], y[test], weight_decay=1e6) == pytest.approx(0.6)


def test_labels_are_encoded_in_sorted_order():
    ints, classes = encode_labels(["7", "3", "7", "10"])
    assert classes == ["10", "3", "7"] and ints.tolist() == [2, 1, 2, 0]


def test_pixel_baseline_is_the_flattened_unit_length_image():
    arr = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    enc = pixel_encoder(Preprocess(size=4, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2]))
    assert enc.dim == 48 and enc.kind == "pixels" and not enc.can_encode_text
    v = enc.encode_images([Image.fromarray(arr)])
    expected = arr.transpose(2, 0, 1).reshape(-1).astype(np.float32) / 255.0  # channels first, no mean/std
    np.testing.assert_allclose(v[0], expected / np.linalg.norm(expected), atol=1e-6)
    gray = enc.encode_images([Image.fromarray(arr[:, :, 0])])  # grayscale -> RGB: three equal channels
    assert np.allclose(gray[0][:16], gray[0][16:32]) and np.allclose(gray[0][:16], gray[0][32:])
