"""HNSW: a graph over float32 vectors -- the fastest queries at high recall when memory allows.

FAISS cannot remove from the graph: removals become tombstones (storage positions that every
search leaves out) until a rebuild compacts them away.
"""

from __future__ import annotations

import re

import faiss
import numpy as np

from index.families import id_map
from index.families.family import ID_BYTES, ExactSearch, Hits, Knob, Removal, from_factory

FACTORY = re.compile(r"HNSW(\d+)(,Flat)?")
# Candidates examined per insertion when the graph is built (FAISS's default: 40); bench/README.md
# has the measurement behind 80.
EF_CONSTRUCTION = 80
EF_SEARCH = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


class HNSW:
    name = "HNSW"

    def matches(self, factory: str) -> bool:
        return FACTORY.fullmatch(factory) is not None

    def holds(self, index: faiss.Index) -> bool:
        return isinstance(id_map.inner(index), faiss.IndexHNSWFlat)

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        index = from_factory(dim, id_map.wrap(factory))
        id_map.inner(index).hnsw.efConstruction = EF_CONSTRUCTION
        return index

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        m = int(FACTORY.fullmatch(factory).group(1))
        return n * (dim * 4 + 2 * m * 4 + ID_BYTES + 8)  # vectors, level-0 links, id map, level bookkeeping

    def training_size(self, index: faiss.Index, n: int) -> int:
        return 0

    def knobs(self, index: faiss.Index) -> list[Knob]:
        return [Knob("efSearch", EF_SEARCH)]

    def exact_search(self, index: faiss.Index) -> ExactSearch | None:
        storage = id_map.inner(index).storage  # the graph's float32 vectors
        return lambda queries, k: storage.search(queries, k)

    def search(self, index: faiss.Index, queries: np.ndarray, k: int, alive: faiss.IDSelector | None,
               exhaustive: bool) -> Hits:
        """``exhaustive``: the graph's stored vectors searched exactly (a graph stops short of large k)."""
        if alive is None and not exhaustive:
            return index.search(queries, k)
        graph = id_map.inner(index)
        below = graph.storage if exhaustive else graph
        return id_map.search_by_position(index, below, queries, k, id_map.selecting(alive))

    def visits_all(self, index: faiss.Index) -> bool:
        return False

    def removal(self, index: faiss.Index) -> Removal | None:
        return "tombstones"

    def stored_ids(self, index: faiss.Index) -> np.ndarray:
        return id_map.ids(index)
