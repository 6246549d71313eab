"""The contract of an index family: what lookalike knows about one kind of FAISS index, in one place.

A family recognises its factory strings (``matches``) and its built or loaded indexes (``holds``),
builds an empty index for a dimension with the caller's ids, estimates its memory, sizes its
training sample, names the search parameters that trade speed for recall, searches (also over
every vector, and around tombstones), says how it takes removals and lists the ids it stores.
Every index holds the vectors' inner products (L2-normalised vectors: inner product = cosine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import faiss
import numpy as np

ID_BYTES = 8  # one int64 id per vector, in an id map or an inverted list

Removal = Literal["remove", "tombstones"]  # FAISS removes by id, or dead storage positions are masked
Hits = tuple[np.ndarray, np.ndarray]  # scores float32 (Q, k), ids int64 (Q, k); missing slots have id -1
ExactSearch = Callable[[np.ndarray, int], object]  # (queries (Q, d), k) -> FAISS's (scores, labels)


@dataclass(frozen=True)
class Knob:
    """A search parameter that trades speed for recall: a ``faiss.ParameterSpace`` name and the
    values to try, increasing (each slower and closer to exact search than the one before)."""

    name: str
    values: list[int]


class Family(Protocol):
    name: str  # Flat, HNSW, IVF-Flat, ...: what the automatic choice compares

    def matches(self, factory: str) -> bool: ...

    def holds(self, index: faiss.Index) -> bool: ...

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        """An empty index for ``factory`` that stores the ids it is given (``add_with_ids``)."""

    def estimate_bytes(self, factory: str, n: int, dim: int) -> int:
        """The memory ``n`` vectors take, roughly as FAISS lays them out (ValueError: no estimate)."""

    def training_size(self, index: faiss.Index, n: int) -> int:
        """How many of ``n`` vectors to train ``index`` on (0: it needs no training)."""

    def knobs(self, index: faiss.Index) -> list[Knob]:
        """The search parameters to tune, in the order to tune them (empty: an exact index)."""

    def exact_search(self, index: faiss.Index) -> ExactSearch | None:
        """A search over every vector ``index`` stores at full precision, if it keeps such a copy."""

    def search(self, index: faiss.Index, queries: np.ndarray, k: int, alive: faiss.IDSelector | None,
               exhaustive: bool) -> Hits:
        """Search, leaving out storage positions that ``alive`` rejects (tombstones; None: none);
        ``exhaustive`` visits every vector where the index would otherwise stop short."""

    def visits_all(self, index: faiss.Index) -> bool:
        """Whether every search already visits every vector."""

    def removal(self, index: faiss.Index) -> Removal | None:
        """How ``index`` takes removals (None: it cannot, only a rebuild is safe)."""

    def stored_ids(self, index: faiss.Index) -> np.ndarray:
        """The ids of every stored vector (int64), in storage order where there is one."""


def from_factory(dim: int, spec: str) -> faiss.Index:
    """``faiss.index_factory`` for inner product; a ValueError naming the spec when FAISS refuses it."""
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"FAISS cannot build {spec!r}: {str(exc).strip().splitlines()[-1]}") from None
