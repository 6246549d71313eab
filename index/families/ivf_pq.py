"""IVF-PQ: inverted lists over product-quantised codes (``m`` sub-vectors of ``nbits`` bits each) --
the smallest footprint, at a recall that the codes cap and no ``nprobe`` restores."""

from __future__ import annotations

import re

import faiss

from index.families.family import ID_BYTES
from index.families.inverted_lists import ListsHoldIds, centroid_bytes

FACTORY = re.compile(r"IVF(\d+),PQ(\d+)(?:x(\d+))?")


def pq_bytes(m: int, nbits: int, n: int, dim: int) -> int:
    """``n`` codes of ``m`` x ``nbits`` bits and the codebooks (2^nbits float32 centroids per sub-vector)."""
    return 2**nbits * dim * 4 + n * -(-m * nbits // 8)


def ivf_pq_bytes(nlist: int, m: int, nbits: int, n: int, dim: int) -> int:
    """The coarse centroids, the codebooks, and a code and an id per vector."""
    return centroid_bytes(nlist, dim) + pq_bytes(m, nbits, n, dim) + n * ID_BYTES


class IVFPQ(ListsHoldIds):
    name = "IVF-PQ"

    def matches(self, factory: str) -> bool:
        return FACTORY.fullmatch(factory) is not None

    def holds(self, index: faiss.Index) -> bool:
        return type(index) is faiss.IndexIVFPQ

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        nlist, m, nbits = FACTORY.fullmatch(factory).groups()
        return ivf_pq_bytes(int(nlist), int(m), int(nbits or 8), n, dim)
