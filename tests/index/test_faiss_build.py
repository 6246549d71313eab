import numpy as np
import pytest

from index.faiss_build import fill, new_index
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
