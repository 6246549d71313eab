import faiss
import numpy as np
import pytest

import index.choose
from index.choose import (
    ArraySource,
    ExactNeighbours,
    build_from,
    build_tuned,
    choose_index,
    estimate_bytes,
    n_lists,
    recall_at_k,
    tune,
    without_self,
)
from index.faiss_build import fill, new_index

G = 2**30


@pytest.mark.parametrize("n, dim, budget, factory", [
    (500, 128, 1 * G, "Flat"),  # small: exact
    (19_999, 512, 1 * G, "Flat"),
    (100_000, 512, 4 * G, "HNSW32"),  # the graph fits
    (1_000_000, 512, 4 * G, "HNSW32"),
    (1_000_000, 512, 2 * G, "IVF4096,Flat"),  # 2 GiB holds the raw vectors, not the graph
    (10_000_000, 512, 64 * G, "IVF16384,Flat"),  # too many for HNSW here
    (1_000_000, 128, 400 * 2**20, "IVF4096,PQ32,Refine(SQfp16)"),  # float16 copies fit, raw vectors do not
    (100_000_000, 512, 128 * G, "IVF32768,PQ64,Refine(SQfp16)"),
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


def test_tuning_narrows_the_value_between_powers_of_two():
    x = _clustered(20_000)
    ids = np.arange(len(x), dtype=np.int64)
    index = fill(new_index(x.shape[1], "HNSW16"), x, ids)
    result = tune(index, x, ids, target_recall=0.99, k=10, queries=200)
    value = result["params"]["efSearch"]
    passing = [t["efSearch"] for t in result["tried"] if t["recall"] >= 0.99]
    failing = [t["efSearch"] for t in result["tried"] if t["recall"] < 0.99]
    assert value == min(passing) and result["recall"] >= 0.99
    if failing:  # the chosen value is within 1/8 of the largest one that fell short
        assert value - max(failing) <= max(1, value // 8)
    assert faiss.downcast_index(index.index).hnsw.efSearch == value  # left set on the index
    assert result["seconds"] > 0 and result["exact_seconds"] > 0


def test_an_approximation_slower_than_exact_search_falls_back_to_flat():
    # uniform random directions in 128 dimensions: no structure for a graph to exploit, and a
    # recall target of 1.0 drives efSearch up until the graph is slower than brute force
    rng = np.random.default_rng(0)
    x = rng.normal(size=(index.choose.EXACT_BELOW + 5_000, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(len(x), dtype=np.int64) + 7
    built, choice, tuning = build_tuned(x, ids, "auto", 4 * G, target_recall=1.0)
    assert choice.factory == "Flat" and choice.params["rejected"]["factory"] == "HNSW32"
    assert "no faster than exact search" in choice.reason
    assert tuning["params"] == {} and built.ntotal == len(x)
    _, found = built.search(x[:5], 1)
    assert found[:, 0].tolist() == ids[:5].tolist()


def test_an_approximation_faster_than_exact_search_is_kept(monkeypatch):
    x = _clustered(index.choose.EXACT_BELOW + 1_000)
    ids = np.arange(len(x), dtype=np.int64)
    real_tune = index.choose.tune_on

    def faster(*args, **kwargs):
        result = real_tune(*args, **kwargs)
        return {**result, "seconds": result["exact_seconds"] / 2}  # as on a machine where the graph wins

    monkeypatch.setattr(index.choose, "tune_on", faster)
    _, choice, tuning = build_tuned(x, ids, "auto", 4 * G, target_recall=0.9)
    assert choice.factory == "HNSW32" and set(tuning["params"]) == {"efSearch"}
    # a factory the user gave is kept whatever the timings say
    monkeypatch.setattr(index.choose, "tune_on", real_tune)
    _, given, _ = build_tuned(x, ids, "HNSW16", 4 * G, target_recall=1.0)
    assert given.factory == "HNSW16" and given.reason == "given"


def test_without_self_drops_the_querys_own_id_or_the_last_entry():
    neighbours = np.array([[7, 3, 5], [3, 7, 9], [1, 2, 4], [7, 7, 2]])
    own = np.array([7, 7, 8, 7])
    assert without_self(neighbours, own, 2).tolist() == [[3, 5], [3, 9], [1, 2], [7, 2]]


def test_tuning_does_not_count_the_query_finding_itself():
    # every vector is a query (so the order of the queries does not matter); each is in the index and,
    # probing its own list, always finds itself: counted, that would be a free tenth of recall@10
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(len(x), dtype=np.int64)
    index = fill(new_index(32, "IVF64,Flat"), x, ids)
    result = tune(index, x, ids, target_recall=0.99, k=10, queries=len(x))
    first = result["tried"][0]
    assert first["nprobe"] == 1
    faiss.extract_index_ivf(index).nprobe = 1
    truth = ids[faiss.knn(x, x, 11, metric=faiss.METRIC_INNER_PRODUCT)[1]]
    found = index.search(x, 11)[1]
    left_out = recall_at_k(without_self(found, ids, 10), without_self(truth, ids, 10))
    counted = recall_at_k(found[:, :10], truth[:, :10])
    assert first["recall"] == pytest.approx(left_out, abs=1e-4)
    assert counted > left_out + 0.05


def test_exact_neighbours_over_chunks_match_brute_force():
    x = _clustered(3000)
    ids = np.arange(len(x), dtype=np.int64) * 3 + 5
    q = x[::97]
    neighbours = ExactNeighbours(q, 11)
    for start in range(0, len(x), 400):
        neighbours.add(ids[start:start + 400], x[start:start + 400])
    _, positions = faiss.knn(q, x, 11, metric=faiss.METRIC_INNER_PRODUCT)
    assert (neighbours.ids() == ids[positions]).mean() > 0.99  # ties may order differently


class CountingSource(ArraySource):
    """An in-memory source that records the largest piece of it anyone held at once."""

    largest = 0

    def chunks(self):
        for ids, vectors in super().chunks():
            self.largest = max(self.largest, len(vectors))
            yield ids, vectors

    def take(self, positions):
        self.largest = max(self.largest, len(positions))
        return super().take(positions)


def test_a_streamed_build_reads_chunks_and_matches_an_in_memory_one():
    x = _clustered(3000)
    ids = np.arange(len(x), dtype=np.int64) + 11
    source = CountingSource(x, ids, chunk=250)
    streamed, choice, tuning = build_from(source, "IVF4,Flat", 4 * G, target_recall=0.97)
    assert source.largest == 1024 < len(x)  # the training sample (256 per list); then 250 at a time
    whole, _, whole_tuning = build_tuned(x, ids, "IVF4,Flat", 4 * G, target_recall=0.97)
    assert tuning["params"] == whole_tuning["params"] and tuning["recall"] == whole_tuning["recall"] >= 0.97
    assert streamed.ntotal == whole.ntotal == len(x)
    np.testing.assert_array_equal(streamed.search(x[:20], 10)[1], whole.search(x[:20], 10)[1])
