"""IVF-Flat: inverted lists over float32 vectors -- exact distances within the ``nprobe`` lists probed."""

from __future__ import annotations

import re

import faiss

from index.families.family import ID_BYTES
from index.families.inverted_lists import ListsHoldIds, centroid_bytes

FACTORY = re.compile(r"IVF(\d+),Flat")


class IVFFlat(ListsHoldIds):
    name = "IVF-Flat"

    def matches(self, factory: str) -> bool:
        return FACTORY.fullmatch(factory) is not None

    def holds(self, index: faiss.Index) -> bool:
        return type(index) is faiss.IndexIVFFlat

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        nlist = int(FACTORY.fullmatch(factory).group(1))
        return centroid_bytes(nlist, dim) + n * (dim * 4 + ID_BYTES)
