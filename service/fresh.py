"""Vectors of items the served index version does not hold yet (uploads, a job that has not published):
a small exact index that every search consults beside the published version, until a version that
holds them is served."""

from __future__ import annotations

import threading

import faiss
import numpy as np


class FreshVectors:
    """Vectors added since the served version was published: an exact inner-product index, thread-safe."""

    def __init__(self, dim: int) -> None:
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, item_id: int, vector: np.ndarray) -> None:
        ids = np.array([item_id], dtype=np.int64)
        with self.lock:
            self.index.remove_ids(ids)  # an item uploaded twice keeps one vector
            self.index.add_with_ids(np.ascontiguousarray(vector[None, :], dtype=np.float32), ids)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.lock:
            if self.index.ntotal == 0:
                return []
            scores, ids = self.index.search(np.ascontiguousarray(query[None, :], dtype=np.float32),
                                            min(k, self.index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def forget(self, ids: np.ndarray) -> None:
        """Drop the items a newly served version holds."""
        with self.lock:
            if self.index.ntotal:
                self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
