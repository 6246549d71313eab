"""The id map layer (IndexIDMap / IndexIDMap2): the caller's ids over an index that numbers its
vectors by storage position. Tombstones are storage positions, so searching around them goes
below the map and turns positions into ids here."""

from __future__ import annotations

import faiss
import numpy as np

from index.families.family import Hits


def wrap(factory: str) -> str:
    """The factory string of ``factory`` under an IDMap2 (which can also reconstruct by id)."""
    return f"IDMap2,{factory}"


def inner(index: faiss.Index) -> faiss.Index | None:
    """The index under ``index``'s id map, or None when ``index`` has none."""
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else None


def ids(index: faiss.Index) -> np.ndarray:
    """The id of every stored vector, in storage order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def search_by_position(index: faiss.Index, below: faiss.Index, queries: np.ndarray, k: int,
                       params: faiss.SearchParameters | None) -> Hits:
    """Search ``below`` (the index under the id map, or a store holding the same positions) and map
    positions to ids as IndexIDMap would (its own selector would see ids, and after an update an
    item's old and new vectors share one id)."""
    if params is None:
        scores, positions = below.search(queries, k)
    else:
        scores, positions = below.search(queries, k, params=params)
    id_map = faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)
    return scores, np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)


def selecting(alive: faiss.IDSelector | None) -> faiss.SearchParameters | None:
    """Plain search parameters that leave out what ``alive`` rejects (None without tombstones)."""
    return None if alive is None else faiss.SearchParameters(sel=alive)
