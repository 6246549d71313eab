import faiss
import numpy as np
import pytest

from index.choose import choose_index, estimate_bytes, n_lists, recall_at_k, tune
from index.faiss_build import fill, new_index

G = 2**30


@pytest.mark.parametrize("n, dim, budget, factory", [
    (500, 128, 1 * G, "Flat"),  # small: exact
    (19_999, 512, 1 * G, "Flat"),
    (100_000, 512, 4 * G, "HNSW32"),  # the graph fits
    (1_000_000, 512, 4 * G, "HNSW32"),
    (1_000_000, 512, 2 * G, "IVF4096,Flat"),  # 2 GiB holds the raw vectors, not the graph
    (10_000_000, 512, 64 * G, "IVF16384,Flat"),  # too many for HNSW here
    (10_000_000, 512, 4 * G, "IVF16384,PQ64"),  # only codes fit
    (10_000_000, 512, 200 * 2**20, "IVF16384,PQ8"),
    (100_000_000, 768, 16 * G, "IVF32768,PQ64"),
])
def test_the_choice_follows_count_and_budget(n, dim, budget, factory):
    choice = choose_index(n, dim, budget)
    assert choice.factory == factory
    assert choice.estimated_bytes == estimate_bytes(factory, n, dim) <= budget
    new_index(dim, factory)  # FAISS accepts the string


def test_a_budget_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="raise --memory-budget"):
        choose_index(10_000_000, 512, 50 * 2**20)


def test_lists_have_enough_training_points():
    assert n_lists(1_000_000) == 4096 and n_lists(100) == 2 and n_lists(10) == 1
    for n in (1_000, 30_000, 5_000_000):
        assert n // n_lists(n) >= 39


def _clustered(n, dim=32, centres=50, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("factory, knob", [("IVF64,Flat", "nprobe"), ("HNSW16", "efSearch")])
def test_tuning_reaches_the_target_recall(factory, knob):
    x = _clustered(20_000)
    ids = np.arange(1000, 1000 + len(x), dtype=np.int64)
    index = new_index(x.shape[1], factory)
    fill(index, x, ids)
    result = tune(index, x, ids, target_recall=0.97, k=10, queries=300)
    assert set(result["params"]) == {knob} and result["recall"] >= 0.97
    # the recall it reports is the recall it gets, measured again independently
    q = x[:300]
    truth = ids[faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]]
    assert recall_at_k(index.search(q, 10)[1], truth) >= 0.95
    if knob == "nprobe":
        assert result["tried"][0]["recall"] < 0.97 <= result["tried"][-1]["recall"]  # it had to search


def test_exact_index_needs_no_tuning():
    x = _clustered(1000)
    index = new_index(32, "Flat")
    fill(index, x, np.arange(1000))
    assert tune(index, x, np.arange(1000))["params"] == {}


def test_recall_counts_missing_slots_as_misses():
    truth = np.array([[1, 2], [3, 4]])
    assert recall_at_k(np.array([[2, 1], [3, -1]]), truth) == 0.75
