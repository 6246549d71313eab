"""Building FAISS indexes through the index factory (inner product on L2-normalised vectors).

With faiss-gpu (``pip install -e '.[gpu]'``) and a CUDA device visible, the k-means that trains
an IVF index's coarse quantizer runs on every GPU (FAISS's ``clustering_index``); the index
itself is built, stored and searched on the CPU as always. With faiss-cpu, or faiss-gpu on a
machine without a GPU, everything runs on the CPU.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from index.families import family_of
from index.families.inverted_lists import MAX_TRAIN as MAX_TRAIN  # benches size samples with it

log = logging.getLogger(__name__)

DEFAULT_FACTORY = "Flat"


def new_index(dim: int, factory: str = DEFAULT_FACTORY) -> faiss.Index:
    """An empty index for ``factory`` that stores the caller's ids, as its family builds it (``index.families``)."""
    return family_of(factory).new_index(dim, factory)


def faiss_gpus() -> int:
    """How many GPUs FAISS can use: 0 with faiss-cpu, or with faiss-gpu and no CUDA device."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def _train_on_gpus(index: faiss.Index, ivf: faiss.IndexIVF, sample: np.ndarray) -> None:
    """Train with the k-means assignments (the costly part) on every GPU; on the CPU if FAISS raises
    an error there (a CUDA failure that FAISS turns into an abort cannot be caught: PyPI's current
    faiss-gpu-cu12 is built for compute capability 7.0-8.9)."""
    try:
        on_gpus = faiss.index_cpu_to_all_gpus(faiss.IndexFlat(ivf.d, ivf.metric_type))
        ivf.clustering_index = on_gpus  # the C++ member does not own it: ``on_gpus`` keeps it alive
        index.train(sample)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        log.warning("IVF training on the GPUs failed (%s); training on the CPU", reason)
        ivf.clustering_index = None
        index.train(sample)
    finally:
        ivf.clustering_index = None  # the GPU copy is not part of the index, nor written with it


def training_size(index: faiss.Index, n: int) -> int:
    """How many of ``n`` vectors to train ``index`` on (0: none), as its family says."""
    return family_of(index).training_size(index, n)


def train(index: faiss.Index, sample: np.ndarray, use_gpu: bool = True) -> None:
    """Train ``index`` on ``sample`` (an IVF's k-means on the GPUs when ``use_gpu`` and FAISS has any)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and use_gpu and faiss_gpus():
        _train_on_gpus(index, ivf, sample)
    else:
        index.train(sample)


def fill(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, seed: int = 0,
         use_gpu: bool = True) -> faiss.Index:
    """Train ``index`` if it needs it (on a random sample of ``training_size`` vectors), then add
    ``vectors`` under ``ids``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    size = training_size(index, len(vectors))
    if size:
        sample = vectors
        if size < len(vectors):
            sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))]
        train(index, sample, use_gpu)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index
