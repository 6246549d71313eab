"""Flat: every vector kept as float32 and compared with every query -- exact search, nothing to tune."""

from __future__ import annotations

import faiss
import numpy as np

from index.families import id_map
from index.families.family import ID_BYTES, ExactSearch, Hits, Knob, Removal, from_factory


class Flat:
    name = "Flat"

    def matches(self, factory: str) -> bool:
        return factory == "Flat"

    def holds(self, index: faiss.Index) -> bool:
        return isinstance(id_map.inner(index), faiss.IndexFlat)

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        return from_factory(dim, id_map.wrap(factory))

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        return n * (dim * 4 + ID_BYTES)

    def training_size(self, index: faiss.Index, n: int) -> int:
        return 0

    def knobs(self, index: faiss.Index) -> list[Knob]:
        return []

    def exact_search(self, index: faiss.Index) -> ExactSearch | None:
        return None  # the index is exact search: there is nothing to time it against

    def search(self, index: faiss.Index, queries: np.ndarray, k: int, alive: faiss.IDSelector | None,
               exhaustive: bool) -> Hits:
        if alive is None:
            return index.search(queries, k)
        return id_map.search_by_position(index, id_map.inner(index), queries, k, id_map.selecting(alive))

    def visits_all(self, index: faiss.Index) -> bool:
        return True

    def removal(self, index: faiss.Index) -> Removal | None:
        return "remove"

    def stored_ids(self, index: faiss.Index) -> np.ndarray:
        return id_map.ids(index)
