"""What the IVF families share: training sizes, the ids in the lists, probing every list, nprobe values."""

from __future__ import annotations

import faiss
import numpy as np

from index.families.family import ExactSearch, Hits, Knob, Removal, from_factory

MAX_TRAIN = 256  # training vectors per IVF list (FAISS's own guidance: 30-256)
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def training_size(index: faiss.Index, n: int) -> int:
    """None when ``index`` needs no training, at most MAX_TRAIN per list for IVF, all of ``n`` otherwise
    (e.g. a PCA or PQ stage)."""
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    return min(n, MAX_TRAIN * ivf.nlist) if ivf is not None else n


def nprobe_knob(ivf: faiss.IndexIVF) -> Knob:
    return Knob("nprobe", [v for v in NPROBE if v < ivf.nlist] + [ivf.nlist])


def every_list(ivf: faiss.IndexIVF, sel: faiss.IDSelector | None = None) -> faiss.SearchParametersIVF:
    """Search parameters that probe every list of ``ivf`` (and leave out what ``sel`` rejects)."""
    params = faiss.SearchParametersIVF(nprobe=ivf.nlist)
    if sel is not None:
        params.sel = sel
    return params


def list_ids(ivf: faiss.IndexIVF) -> np.ndarray:
    """The ids stored in ``ivf``'s lists, list by list."""
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(lists.nlist)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def centroid_bytes(nlist: int, dim: int) -> int:
    """The coarse quantizer: one float32 centroid per list."""
    return nlist * dim * 4


class ListsHoldIds:
    """The behaviour shared by the IVF families whose index is the IVF itself (no id map above it):
    the lists hold the caller's ids, FAISS removes by id, ``nprobe`` is tuned, and an exhaustive
    search probes every list. A family adds its factory strings, index class and memory estimate."""

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        return from_factory(dim, factory)

    def training_size(self, index: faiss.Index, n: int) -> int:
        return training_size(index, n)

    def knobs(self, index: faiss.Index) -> list[Knob]:
        return [nprobe_knob(index)]

    def exact_search(self, index: faiss.Index) -> ExactSearch | None:
        return None  # no full-precision copy apart from the lists themselves

    def search(self, index: faiss.Index, queries: np.ndarray, k: int, alive: faiss.IDSelector | None,
               exhaustive: bool) -> Hits:
        if alive is not None:
            raise ValueError("an IVF index removes by id: it has no tombstones to leave out")
        if exhaustive:
            return index.search(queries, k, params=every_list(index))
        return index.search(queries, k)

    def visits_all(self, index: faiss.Index) -> bool:
        return False

    def removal(self, index: faiss.Index) -> Removal | None:
        return "remove"

    def stored_ids(self, index: faiss.Index) -> np.ndarray:
        return list_ids(index)
