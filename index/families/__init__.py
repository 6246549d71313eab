"""The FAISS index families lookalike knows, and ``family_of`` to find the one of a factory string or index.

One module per family (see ``family.Family`` for what each knows, and docs/index-families.md for
adding one); ``Composite`` comes last and takes whatever the others do not claim.
"""

from __future__ import annotations

import faiss

from index.families.composite import Composite
from index.families.family import Family, Knob, Removal
from index.families.flat import Flat
from index.families.hnsw import HNSW
from index.families.ivf_flat import IVFFlat
from index.families.ivf_pq import IVFPQ
from index.families.ivf_pq_refine import IVFPQRefine

FAMILIES: tuple[Family, ...] = (Flat(), HNSW(), IVFFlat(), IVFPQ(), IVFPQRefine(), Composite())

__all__ = ["FAMILIES", "Family", "Knob", "Removal", "family_of"]


def family_of(factory_or_index: str | faiss.Index) -> Family:
    """The family of a factory string (as the caller gave it) or of a built or loaded index."""
    if isinstance(factory_or_index, str):
        return next(f for f in FAMILIES if f.matches(factory_or_index))
    index = faiss.downcast_index(factory_or_index)
    return next(f for f in FAMILIES if f.holds(index))
