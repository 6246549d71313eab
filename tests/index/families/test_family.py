"""Every family keeps the contract of ``index.families.family.Family``: the same checks for each."""

import faiss
import numpy as np
import pytest

from index.faiss_build import fill, new_index
from index.families import family_of

# factory -> (family, removal); one factory per family, and the fallback's typical cases
CASES = {
    "Flat": ("Flat", "remove"),
    "HNSW16": ("HNSW", "tombstones"),
    "IVF16,Flat": ("IVF-Flat", "remove"),
    "IVF16,PQ8x4": ("IVF-PQ", "remove"),  # 4-bit codes: PQ codebooks train 16x faster than 8-bit ones
    "IVF16,PQ8x4,RFlat": ("IVF-PQ-Refine", "tombstones"),
    "IVF16,PQ8x4,Refine(SQfp16)": ("IVF-PQ-Refine", "tombstones"),
    "IVF16,SQ8": ("other", "remove"),
    "PQ8x4": ("other", "remove"),
    "PCA16,HNSW16": ("other", None),
    "IDMap2,IVF16,Flat": ("other", None),
}


def _vectors(n=2000, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
    return _vectors()


def _built(factory, vectors):
    ids = np.arange(len(vectors), dtype=np.int64) * 2 + 7
    return fill(new_index(vectors.shape[1], factory), vectors, ids), ids


@pytest.mark.parametrize("factory", CASES)
def test_the_family_of_a_factory_is_the_family_of_its_index(factory, vectors):
    name, removal = CASES[factory]
    index, ids = _built(factory, vectors)
    family = family_of(index)
    assert family_of(factory).name == family.name == name and family.removal(index) == removal
    assert sorted(family.stored_ids(index).tolist()) == ids.tolist()  # the caller's ids, every one


@pytest.mark.parametrize("factory", CASES)
def test_knobs_are_search_parameters_faiss_can_set(factory, vectors):
    index, _ = _built(factory, vectors)
    for knob in family_of(index).knobs(index):
        assert knob.values == sorted(knob.values)
        faiss.ParameterSpace().set_index_parameter(index, knob.name, knob.values[-1])


@pytest.mark.parametrize("factory", [f for f in CASES if CASES[f][0] != "other"])
def test_memory_estimates_are_close_to_what_faiss_writes(factory, vectors):
    index, _ = _built(factory, vectors)
    written = len(faiss.serialize_index(index))
    estimate = family_of(factory).estimate_bytes(factory, len(vectors), vectors.shape[1])
    # HNSW's levels above the first vary with the draw; the others are laid out as counted
    assert abs(estimate - written) <= (0.15 if factory.startswith("HNSW") else 0.02) * written


def test_the_fallback_has_no_memory_estimate():
    with pytest.raises(ValueError, match="no memory estimate"):
        family_of("IVF16,SQ8").estimate_bytes("IVF16,SQ8", 1000, 32)


@pytest.mark.parametrize("factory", CASES)
def test_training_samples_are_bounded_by_the_lists(factory, vectors):
    index = new_index(vectors.shape[1], factory)
    size = family_of(index).training_size(index, 100_000)
    ivf = faiss.try_extract_index_ivf(index)
    if index.is_trained:
        assert size == 0
    else:
        assert size == (min(100_000, 256 * ivf.nlist) if ivf is not None else 100_000)


@pytest.mark.parametrize("factory", CASES)
def test_an_exhaustive_search_returns_every_vector_best_first(factory, vectors):
    index, ids = _built(factory, vectors)
    family = family_of(index)
    for knob in family.knobs(index):  # the fastest setting: approximate indexes stop short
        faiss.ParameterSpace().set_index_parameter(index, knob.name, knob.values[0])
    scores, found = family.search(index, vectors[:2], len(ids), None, exhaustive=True)
    assert all(sorted(row.tolist()) == ids.tolist() for row in found) or factory in ("PCA16,HNSW16",)
    assert (np.diff(scores[0][found[0] >= 0]) <= 1e-5).all()
    if family.visits_all(index):
        _, plain = family.search(index, vectors[:2], len(ids), None, exhaustive=False)
        assert all(sorted(row.tolist()) == ids.tolist() for row in plain)


@pytest.mark.parametrize("factory", [f for f in CASES if CASES[f][1] == "tombstones"])
def test_tombstoned_positions_never_come_back(factory, vectors):
    index, ids = _built(factory, vectors)
    family = family_of(index)
    alive = np.ones(index.ntotal, dtype=bool)
    alive[:100] = False
    bitmap = np.packbits(alive, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    for exhaustive in (False, True):
        _, found = family.search(index, vectors[:50], 10, selector, exhaustive)
        assert not set(found.ravel().tolist()) & set(ids[:100].tolist()) and (found >= 0).all()
    with pytest.raises(RuntimeError):  # why they are tombstones: FAISS cannot remove from them
        index.remove_ids(faiss.IDSelectorBatch(ids[:1]))


@pytest.mark.parametrize("factory", [f for f in CASES if CASES[f][1] == "remove"])
def test_removed_ids_are_gone(factory, vectors):
    index, ids = _built(factory, vectors)
    index.remove_ids(faiss.IDSelectorBatch(ids[:100]))
    family = family_of(index)
    assert sorted(family.stored_ids(index).tolist()) == ids[100:].tolist()
    _, found = family.search(index, vectors[:5], 10, None, exhaustive=True)
    assert not set(found.ravel().tolist()) & set(ids[:100].tolist())


@pytest.mark.parametrize("factory", ["HNSW16", "IVF16,PQ8x4,RFlat"])
def test_exact_search_is_over_the_full_precision_copy(factory, vectors):
    index, _ = _built(factory, vectors)
    exact = family_of(index).exact_search(index)
    _, positions = exact(vectors[:20], 1)
    assert positions[:, 0].tolist() == list(range(20))  # each vector finds itself at its storage position
