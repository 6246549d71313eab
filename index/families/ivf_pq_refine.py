"""IVF-PQ with a refine stage: inverted lists of PQ codes find ``k_factor`` x k candidates, which are
re-ranked on a second copy of the vectors (float32 ``RFlat``/``Refine(Flat)``, or ``Refine(SQfp16)`` /
``Refine(SQ8)`` at 2 / 1 bytes a dimension). The codes keep the scan cheap and the copy restores
the recall that the codes alone cap: FAISS's recipe for recall near 0.95 at 100M vectors.

The refine stage numbers vectors by position and cannot remove, so the index lives under an id
map and removals become tombstones, as for HNSW.
"""

from __future__ import annotations

import re

import faiss
import numpy as np

from index.families import id_map
from index.families.family import ID_BYTES, ExactSearch, Hits, Knob, Removal, from_factory
from index.families.inverted_lists import nprobe_knob, training_size
from index.families.ivf_pq import FACTORY as IVF_PQ
from index.families.ivf_pq import ivf_pq_bytes

FACTORY = re.compile(rf"({IVF_PQ.pattern}),(RFlat|Refine\((Flat|SQfp16|SQ8)\))")
STORE_BYTES = {"Flat": 4, "SQfp16": 2, "SQ8": 1}  # per dimension of a vector's refine copy
K_FACTOR = [1, 2, 4, 8, 16, 32, 64, 128, 256]  # candidates re-ranked, as multiples of k


def _refine(index: faiss.Index) -> faiss.IndexRefine:
    return id_map.inner(index)


class IVFPQRefine:
    name = "IVF-PQ-Refine"

    def matches(self, factory: str) -> bool:
        return FACTORY.fullmatch(factory) is not None

    def holds(self, index: faiss.Index) -> bool:
        refine = id_map.inner(index)
        return (isinstance(refine, faiss.IndexRefine)
                and type(faiss.downcast_index(refine.base_index)) is faiss.IndexIVFPQ)

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        return from_factory(dim, id_map.wrap(factory))

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        """The IVF-PQ (whose lists hold positions), the refine copies, and the id map."""
        _, nlist, m, nbits, _, store = FACTORY.fullmatch(factory).groups()
        copy = n * dim * STORE_BYTES[store or "Flat"] + (2 * dim * 4 if store == "SQ8" else 0)  # SQ8: per-dim ranges
        return ivf_pq_bytes(int(nlist), int(m), int(nbits or 8), n, dim) + copy + n * ID_BYTES

    def training_size(self, index: faiss.Index, n: int) -> int:
        return training_size(index, n)

    def knobs(self, index: faiss.Index) -> list[Knob]:
        """k_factor first (tuned with every list probed: what the codes' ranking loses), then nprobe."""
        return [Knob("k_factor_rf", K_FACTOR), nprobe_knob(faiss.extract_index_ivf(index))]

    def exact_search(self, index: faiss.Index) -> ExactSearch | None:
        store = faiss.downcast_index(_refine(index).refine_index)
        if not isinstance(store, faiss.IndexFlat):
            return None  # a compressed copy is not exact search
        return lambda queries, k: store.search(queries, k)

    def search(self, index: faiss.Index, queries: np.ndarray, k: int, alive: faiss.IDSelector | None,
               exhaustive: bool) -> Hits:
        """``exhaustive``: the refine copies, which hold every vector, searched whole."""
        refine = _refine(index)
        if exhaustive:
            store = faiss.downcast_index(refine.refine_index)
            return id_map.search_by_position(index, store, queries, k, id_map.selecting(alive))
        if alive is None:
            return index.search(queries, k)
        # search parameters replace the index's own settings: hand both down, with the selector
        lists = faiss.SearchParametersIVF(nprobe=faiss.extract_index_ivf(refine).nprobe, sel=alive)
        params = faiss.IndexRefineSearchParameters(k_factor=refine.k_factor, base_index_params=lists)
        return id_map.search_by_position(index, refine, queries, k, params)

    def visits_all(self, index: faiss.Index) -> bool:
        return False

    def removal(self, index: faiss.Index) -> Removal | None:
        return "tombstones"

    def stored_ids(self, index: faiss.Index) -> np.ndarray:
        return id_map.ids(index)
