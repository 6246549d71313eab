"""Any other factory string FAISS accepts (a PCA/OPQ transform, SQ codes, an IVF under an id map, ...):
known by looking inside the index rather than by name. Last in the registry, it takes what no other
family claims; it has no memory estimate, and takes removals only where that is plainly safe."""

from __future__ import annotations

import faiss
import numpy as np

from index.families import hnsw, id_map, inverted_lists
from index.families.family import ExactSearch, Hits, Knob, Removal, from_factory


def _every_list(index: faiss.Index) -> faiss.SearchParameters | None:
    """Parameters that make the IVF inside ``index`` probe all its lists (through id maps and
    transforms, which hand their parameters down), or None when there is no IVF to open up."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVF):
        return inverted_lists.every_list(index)
    if isinstance(index, faiss.IndexIDMap):
        return _every_list(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _every_list(index.index)
        return faiss.SearchParametersPreTransform(index_params=inner) if inner is not None else None
    return None


class Composite:
    name = "other"

    def matches(self, factory: str) -> bool:
        return True

    def holds(self, index: faiss.Index) -> bool:
        return True

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        """IVF keeps the caller's ids itself, an id map is kept as given; anything else goes under IDMap2."""
        index = from_factory(dim, factory if factory.startswith(("IVF", "IDMap")) else id_map.wrap(factory))
        if isinstance(id_map.inner(index), faiss.IndexHNSW):
            id_map.inner(index).hnsw.efConstruction = hnsw.EF_CONSTRUCTION
        return index

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        raise ValueError(f"no memory estimate for factory {factory!r}")

    def training_size(self, index: faiss.Index, n: int) -> int:
        return inverted_lists.training_size(index, n)

    def knobs(self, index: faiss.Index) -> list[Knob]:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            return [inverted_lists.nprobe_knob(ivf)]
        if isinstance(id_map.inner(index), faiss.IndexHNSW):
            return [Knob("efSearch", hnsw.EF_SEARCH)]
        return []

    def exact_search(self, index: faiss.Index) -> ExactSearch | None:
        inner = id_map.inner(index)
        if isinstance(inner, faiss.IndexHNSW):
            storage = inner.storage
            return lambda queries, k: storage.search(queries, k)
        return None

    def search(self, index: faiss.Index, queries: np.ndarray, k: int, alive: faiss.IDSelector | None,
               exhaustive: bool) -> Hits:
        inner = id_map.inner(index)
        if exhaustive and isinstance(inner, faiss.IndexHNSW):
            return id_map.search_by_position(index, inner.storage, queries, k, id_map.selecting(alive))
        every_list = _every_list(index) if exhaustive else None
        if every_list is not None and alive is None:
            return index.search(queries, k, params=every_list)
        if alive is None:
            return index.search(queries, k)
        return id_map.search_by_position(index, inner, queries, k, id_map.selecting(alive))

    def visits_all(self, index: faiss.Index) -> bool:
        return isinstance(id_map.inner(index), faiss.IndexFlatCodes)

    def removal(self, index: faiss.Index) -> Removal | None:
        """Inverted lists at the top, or flat codes under an id map (PQ, SQ), remove by id; a graph
        under an id map takes tombstones; anything else (a transform, an IVF under an id map, whose
        lists hold positions that a removal would shift) only a rebuild."""
        if isinstance(index, faiss.IndexIVF):
            return "remove"
        inner = id_map.inner(index)
        if isinstance(inner, faiss.IndexFlatCodes):
            return "remove"
        if isinstance(inner, (faiss.IndexHNSW, faiss.IndexNSG)):
            return "tombstones"
        return None

    def stored_ids(self, index: faiss.Index) -> np.ndarray:
        if isinstance(index, faiss.IndexIDMap):
            return id_map.ids(index)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None:
            return np.arange(index.ntotal, dtype=np.int64)  # no id layer: ids are positions
        return inverted_lists.list_ids(ivf)
