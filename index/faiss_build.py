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

log = logging.getLogger(__name__)

DEFAULT_FACTORY = "Flat"
# Candidates examined per insertion when an HNSW graph is built. FAISS's default is 40; at 80
# the graph costs ~1.6x the build time and gives ~2 points more recall@10 at the same query
# speed (bench/index_choice.py's data, 200k vectors: 0.870 -> 0.890 at efSearch 256).
HNSW_EF_CONSTRUCTION = 80


def new_index(dim: int, factory: str = DEFAULT_FACTORY) -> faiss.Index:
    """An empty index for ``factory``; ids are caller-supplied (IVF keeps them itself, others via IDMap2)."""
    if factory.startswith("IVF") or factory.startswith("IDMap"):
        spec = factory
    else:
        spec = f"IDMap2,{factory}"
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"FAISS cannot build {spec!r}: {str(exc).strip().splitlines()[-1]}") from None
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


MAX_TRAIN = 256  # training vectors per IVF list (FAISS's own guidance: 30-256)


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
    """How many of ``n`` vectors to train ``index`` on: none when it needs no training, at most
    MAX_TRAIN per list for IVF, all of them otherwise (e.g. a PCA or PQ stage)."""
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    return min(n, MAX_TRAIN * ivf.nlist) if ivf is not None else n


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
