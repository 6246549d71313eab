import numpy as np
import pytest

from index.faiss_build import faiss_gpus, fill, new_index
from index.version import stored_ids


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat", "IDMap2,Flat"])
def test_factories_keep_caller_ids(factory):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(200, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1000, 1200)
    index = fill(new_index(16, factory), vecs, ids)
    if hasattr(index, "nprobe"):
        index.nprobe = 4
    _, found = index.search(vecs[:20], 1)
    assert found[:, 0].tolist() == ids[:20].tolist()
    assert sorted(stored_ids(index).tolist()) == ids.tolist()


def test_bad_factory_string_is_a_value_error():
    with pytest.raises(ValueError, match="FAISS cannot build"):
        new_index(16, "NoSuchIndex42")


def _clustered(n: int = 4000, dim: int = 32, centres: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = (c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall_at_10(index, vectors: np.ndarray, ids: np.ndarray) -> float:
    import faiss

    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(vectors[:200], 10)
    faiss.extract_index_ivf(index).nprobe = 8
    _, found = index.search(vectors[:200], 10)
    return float(np.mean([len(set(ids[t]) & set(f)) / 10 for t, f in zip(truth, found)]))


def test_ivf_training_leaves_no_clustering_index_behind():
    import faiss

    vectors = _clustered()
    index = fill(new_index(32, "IVF64,Flat"), vectors, np.arange(len(vectors)))
    assert faiss.extract_index_ivf(index).clustering_index is None
    assert len(faiss.serialize_index(index)) > 0


@pytest.mark.skipif(faiss_gpus() == 0, reason="needs faiss-gpu (the gpu extra) and a CUDA device")
def test_ivf_trained_on_the_gpus_is_a_cpu_index_as_good_as_one_trained_on_the_cpu():
    import faiss

    vectors, ids = _clustered(), np.arange(4000)
    on_gpu = fill(new_index(32, "IVF64,Flat"), vectors, ids, use_gpu=True)
    on_cpu = fill(new_index(32, "IVF64,Flat"), vectors, ids, use_gpu=False)
    assert faiss.extract_index_ivf(on_gpu).clustering_index is None
    assert isinstance(faiss.deserialize_index(faiss.serialize_index(on_gpu)), faiss.IndexIVFFlat)
    assert _recall_at_10(on_gpu, vectors, ids) >= _recall_at_10(on_cpu, vectors, ids) - 0.05


def test_ivf_training_falls_back_to_the_cpu_when_the_gpus_fail(monkeypatch, caplog):
    # fault injection: as if faiss-gpu saw a device but could not use it
    import faiss

    import index.faiss_build as fb

    def unusable(index, *args, **kwargs):
        raise RuntimeError("Error in virtual void faiss::gpu::...: CUDA error 209 no kernel image is available")

    monkeypatch.setattr(fb, "faiss_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", unusable)
    vectors, ids = _clustered(), np.arange(4000)
    index = fill(new_index(32, "IVF64,Flat"), vectors, ids)
    assert index.is_trained and index.ntotal == 4000
    assert faiss.extract_index_ivf(index).clustering_index is None
    assert "no kernel image" in caplog.text and _recall_at_10(index, vectors, ids) > 0.8
