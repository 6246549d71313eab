"""Seconds to train an IVF index's k-means on the GPUs against the same training on the CPU.

Both go through ``index.faiss_build.train`` (the indexer's own path): with ``use_gpu=False``
on the CPU cores, with ``use_gpu=True`` on every GPU that FAISS sees. The vectors are random,
L2-normalised, and the same for both (k-means costs the same on any data of that shape).
ratio = GPU / CPU seconds (below 1.0: the GPU is faster).

With faiss-cpu, or faiss-gpu without a CUDA device FAISS can use, only the CPU side runs and
the result says why the GPU side did not.

    python bench/faiss_kmeans.py [--vectors 100000] [--dim 256] [--nlist 1024]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from common import REPO, save

sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--name", default="faiss_kmeans")
    a = p.parse_args()

    import faiss

    from index.faiss_build import MAX_TRAIN, faiss_gpus, new_index, train

    rng = np.random.default_rng(0)
    sample = rng.standard_normal((min(a.vectors, MAX_TRAIN * a.nlist), a.dim), dtype=np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    factory = f"IVF{a.nlist},Flat"

    def timed(use_gpu: bool) -> float:
        index = new_index(a.dim, factory)
        started = time.perf_counter()
        train(index, sample, use_gpu=use_gpu)
        seconds = time.perf_counter() - started
        assert index.is_trained
        return seconds

    # the GPU path falls back to the CPU with a warning when FAISS raises there: catch that
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("index.faiss_build").addHandler(handler)

    gpus = faiss_gpus()
    cpu_s = timed(use_gpu=False)
    gpu_s = timed(use_gpu=True) if gpus else None
    if not hasattr(faiss, "StandardGpuResources"):
        skipped = f"no faiss-gpu wheel at hand: this FAISS ({faiss.__version__}) is a CPU build"
    elif not gpus:
        skipped = "faiss-gpu sees no CUDA device"
    elif warnings:
        skipped = f"the GPU training failed and fell back to the CPU: {warnings[-1]}"
    else:
        skipped = None
    result = {
        "command": "faiss_kmeans.py " + " ".join(sys.argv[1:]),
        "faiss": faiss.__version__, "factory": factory, "training_vectors": len(sample), "dim": a.dim,
        "faiss_gpus": gpus, "seconds": {"cpu": cpu_s, "gpu": gpu_s},
        "ratio": gpu_s / cpu_s if gpu_s is not None and not skipped else None,
        "gpu_skipped": skipped,
    }
    path = save(a.name, result)
    print(f"{factory} k-means on {len(sample)} x {a.dim}: CPU {cpu_s:.2f} s; "
          + (f"GPU {gpu_s:.2f} s, ratio {result['ratio']:.3f}" if result["ratio"] is not None else f"GPU: {skipped}"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
