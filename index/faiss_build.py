"""Building FAISS indexes through the index factory (inner product on L2-normalised vectors)."""

from __future__ import annotations

import faiss
import numpy as np

DEFAULT_FACTORY = "Flat"


def new_index(dim: int, factory: str = DEFAULT_FACTORY) -> faiss.Index:
    """An empty index for ``factory``; ids are caller-supplied (IVF keeps them itself, others via IDMap2)."""
    if factory.startswith("IVF") or factory.startswith("IDMap"):
        spec = factory
    else:
        spec = f"IDMap2,{factory}"
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"FAISS cannot build {spec!r}: {str(exc).strip().splitlines()[-1]}") from None


def fill(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """Train ``index`` on ``vectors`` if it needs it, then add them under ``ids``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if not index.is_trained:
        index.train(vectors)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index
