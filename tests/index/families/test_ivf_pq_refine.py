"""IVF-PQ with a refine stage: codes find the candidates, a second copy of the vectors ranks them."""

import faiss
import numpy as np
import pytest

from index.choose import build_tuned, recall_at_k
from index.families import family_of
from index.manifest import Manifest
from index.version import open_version, publish

G = 2**30


@pytest.mark.parametrize("factory, family", [
    ("IVF64,PQ8,RFlat", "IVF-PQ-Refine"),
    ("IVF64,PQ8x4,Refine(SQfp16)", "IVF-PQ-Refine"),
    ("IVF64,PQ8,Refine(SQ8)", "IVF-PQ-Refine"),
    ("IVF64,PQ8,Refine(Flat)", "IVF-PQ-Refine"),
    ("IVF64,PQ8", "IVF-PQ"),
    ("IVF64,PQ8x4fs,RFlat", "other"),  # fast-scan codes: another index class, known by introspection only
])
def test_factory_strings(factory, family):
    assert family_of(factory).name == family


def test_the_memory_estimate_counts_the_refine_copies():
    n, dim = 1_000_000, 128
    codes = family_of("IVF1024,PQ16").estimate_bytes("IVF1024,PQ16", n, dim)

    def refined(store):
        factory = f"IVF1024,PQ16,{store}"
        return family_of(factory).estimate_bytes(factory, n, dim)

    id_map = n * 8  # the refine stage numbers by position: the caller's ids are kept in an id map
    assert refined("Refine(SQfp16)") - codes == n * dim * 2 + id_map
    assert refined("RFlat") == refined("Refine(Flat)") == refined("Refine(SQfp16)") + n * dim * 2
    assert refined("Refine(SQ8)") == refined("Refine(SQfp16)") - n * dim + 2 * dim * 4  # + per-dim ranges


def _clustered(n=10_000, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = _clustered()
    ids = np.arange(len(x), dtype=np.int64) + 5
    q = x[:300]
    return x, ids, q, ids[faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]]


def test_the_refine_stage_reaches_the_recall_that_the_codes_alone_cannot(data):
    x, ids, q, truth = data
    _, _, codes_only = build_tuned(x, ids, "IVF64,PQ8x4", 4 * G, target_recall=0.95)
    assert codes_only["recall"] < 0.6  # 4-byte codes of 32 dimensions: every nprobe falls short
    index, choice, tuning = build_tuned(x, ids, "IVF64,PQ8x4,RFlat", 4 * G, target_recall=0.95)
    assert set(tuning["params"]) == {"k_factor_rf", "nprobe"} and tuning["recall"] >= 0.95
    assert choice.estimated_bytes == family_of(index).estimate_bytes("IVF64,PQ8x4,RFlat", len(x), 32)
    # k_factor was tuned with every list probed, and then nprobe with that k_factor
    first = tuning["tried"][0]
    assert first["nprobe"] == 64 and first["k_factor_rf"] == 1
    assert recall_at_k(index.search(q, 10)[1], truth) >= 0.93  # measured again, on other queries' truth


def test_tuned_parameters_and_tombstones_survive_publishing(data, tmp_path):
    x, ids, q, _ = data
    index, _, tuning = build_tuned(x, ids, "IVF64,PQ8x4,Refine(SQfp16)", 4 * G, target_recall=0.95)
    manifest = Manifest.from_json({"encoder": {"fingerprint": "f" * 64}, "dim": 32,
                                   "factory": "IVF64,PQ8x4,Refine(SQfp16)", "search_params": tuning["params"]})
    dead = np.arange(0, 400, 2)
    v = open_version(publish(tmp_path, index, manifest, tombstones=dead), mmap=True)
    refine = faiss.downcast_index(v.index.index)
    assert refine.k_factor == tuning["params"]["k_factor_rf"]
    assert faiss.extract_index_ivf(refine).nprobe == tuning["params"]["nprobe"]
    assert v.count == len(x) - len(dead) and set(v.ids().tolist()) == set(ids.tolist()) - set(ids[dead].tolist())
    for exhaustive in (False, True):
        _, found = v.search(x[:400], 10, exhaustive=exhaustive)
        assert not set(found.ravel().tolist()) & set(ids[dead].tolist())
        assert (found[1::2, 0] == ids[1:400:2]).mean() > 0.95  # a live vector finds itself
    _, every = v.search(x[:2], len(x), exhaustive=True)
    assert ((every >= 0).sum(axis=1) == v.count).all()
