"""The automatic index choice at scale: recall@10 against exact search and queries per second, for
``index.choose`` (our choice, tuned to a target recall) and for autofaiss at the same memory budget.

Vectors: the emoji images embedded by an encoder (``--encoder``, default a random ``lookalike-tiny``:
the structure comes from the images either way), each repeated with small Gaussian perturbations
until there are ``--n`` of them (default 1M), L2-normalised. Queries are fresh perturbations of
random base vectors, so each has true neighbours among the indexed ones. The exact top-10 of every
query (FAISS brute force) is the ground truth.

autofaiss pins numpy<2, so it runs in its own virtual environment, given by ``--autofaiss-python``
(``python3 -m venv /tmp/afvenv && /tmp/afvenv/bin/pip install autofaiss``); vectors and queries are
handed over as .npy files. Both sides search with the same number of threads.

    python bench/index_choice.py [--n 1000000] [--budget 1G] [--autofaiss-python /tmp/afvenv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, emoji_rows, random_encoder, save

sys.path.insert(0, str(REPO))

AUTOFAISS_SIDE = r"""
import json, sys, time
import numpy as np, faiss
from autofaiss import build_index
x = np.load(sys.argv[1]); q = np.load(sys.argv[2]); budget = sys.argv[3]; threads = int(sys.argv[4])
faiss.omp_set_num_threads(threads)
t = time.perf_counter()
index, info = build_index(embeddings=x, save_on_disk=False, max_index_memory_usage=budget,
                          current_memory_available="16G", metric_type="ip", min_nearest_neighbors_to_retrieve=10,
                          verbose=30)
build_s = time.perf_counter() - t
t = time.perf_counter(); _, ids = index.search(q, 10); search_s = time.perf_counter() - t
np.save(sys.argv[5], ids)
print(json.dumps({"build_seconds": build_s, "search_seconds": search_s, "info": {k: str(v) for k, v in info.items()},
                  "index": str(index)}))
"""


def vectors(n: int, queries: int, encoder_spec: str, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from index.decode import open_image
    from training.encoder import load_encoder

    _, rows = emoji_rows()
    encoder = load_encoder(encoder_spec)
    base = encoder.encode_images([open_image(Path(r["file"])) for r in rows])  # (B, d)
    rng = np.random.default_rng(seed)

    def perturbed(count: int) -> np.ndarray:
        out = np.empty((count, base.shape[1]), dtype=np.float32)
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            picks = rng.integers(0, len(base), stop - start)
            v = base[picks] + sigma * rng.standard_normal((stop - start, base.shape[1])).astype(np.float32)
            out[start:stop] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    return perturbed(n), perturbed(queries)


def vector_arguments(p: argparse.ArgumentParser, n: int, name: str) -> None:
    """The options of a bench over ``vectors()``: how many, queries, budget, perturbation, threads, result name."""
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--budget", default="1G", help="memory budget of the index")
    p.add_argument("--sigma", type=float, default=0.05, help="perturbation per coordinate")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default=name, help="bench/results/NAME.json")


def recall_at_speed(curve: list[dict], qps: float) -> float | None:
    """Recall@10 of our index at ``qps`` queries/s: linear in log(q/s) between the two curve points around it."""
    points = sorted((c["queries_per_second"], c["recall_at_10"]) for c in curve)
    for (q0, r0), (q1, r1) in zip(points, points[1:]):
        if q0 <= qps <= q1:
            return round(r0 + (r1 - r0) * (np.log(qps / q0) / np.log(q1 / q0)), 4)
    return None  # outside the measured range


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vector_arguments(p, n=1_000_000, name="index_choice_cpu")
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--encoder", default=None)
    p.add_argument("--autofaiss-python", default=None, help="python of a venv with autofaiss (skipped when absent)")
    a = p.parse_args()

    import faiss

    from index.__main__ import parse_bytes
    from index.choose import build_tuned, recall_at_k, search_parameter

    faiss.omp_set_num_threads(a.threads)
    budget = parse_bytes(a.budget)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = a.encoder or str(random_encoder("lookalike-tiny", tmp / "encoder.safetensors"))
        x, q = vectors(a.n, a.queries, spec, a.sigma)
        ids = np.arange(len(x), dtype=np.int64)
        started = time.perf_counter()
        _, truth = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        exact_s = time.perf_counter() - started

        started = time.perf_counter()
        index, choice, tuning = build_tuned(x, ids, "auto", budget, a.target_recall)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        _, found = index.search(q, 10)
        search_s = time.perf_counter() - started
        ours = {"factory": choice.factory, "reason": choice.reason, "estimated_bytes": choice.estimated_bytes,
                "choice_params": choice.params, "tuning": tuning, "search_params": tuning["params"],
                "build_and_tune_seconds": round(build_s, 1),
                "recall_at_10": recall_at_k(found, truth), "queries_per_second": len(q) / search_s}

        theirs = None
        if a.autofaiss_python:
            np.save(tmp / "x.npy", x)
            np.save(tmp / "q.npy", q)
            proc = subprocess.run([a.autofaiss_python, "-c", AUTOFAISS_SIDE, str(tmp / "x.npy"), str(tmp / "q.npy"),
                                   a.budget, str(a.threads), str(tmp / "ids.npy")], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"autofaiss failed:\n{proc.stderr[-3000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            theirs = {"index": out["index"], "info": out["info"], "build_seconds": round(out["build_seconds"], 1),
                      "recall_at_10": recall_at_k(np.load(tmp / "ids.npy"), truth),
                      "queries_per_second": len(q) / out["search_seconds"]}

        # our index along its speed/recall knob, to compare at autofaiss's speed and recall
        curve = []
        knob = search_parameter(index)
        if knob is not None:
            name, values = knob
            chosen = tuning["params"].get(name)
            for value in sorted(set(values) | ({chosen} if chosen else set())):
                faiss.ParameterSpace().set_index_parameter(index, name, value)
                started = time.perf_counter()
                _, found = index.search(q, 10)
                curve.append({name: value, "recall_at_10": recall_at_k(found, truth),
                              "queries_per_second": len(q) / (time.perf_counter() - started)})
        ours["curve"] = curve
        if theirs and curve:
            reach = [c for c in curve if c["recall_at_10"] >= theirs["recall_at_10"]]
            ours["at_autofaiss_recall"] = reach[0] if reach else None
            ours["recall_at_autofaiss_speed"] = recall_at_speed(curve, theirs["queries_per_second"])

    result = {"command": "index_choice.py " + " ".join(sys.argv[1:]), "n": a.n, "dim": int(x.shape[1]),
              "queries": a.queries, "budget": a.budget, "sigma": a.sigma, "threads": a.threads,
              "exact_search_qps": a.queries / exact_s, "lookalike": ours, "autofaiss": theirs}
    path = save(a.name, result)
    print(f"ours: {ours['factory']} {ours['search_params']}, recall@10 {ours['recall_at_10']:.3f}, "
          f"{ours['queries_per_second']:.0f} q/s (exact: {result['exact_search_qps']:.0f} q/s)")
    if theirs:
        print(f"autofaiss: {theirs['info'].get('index_key', theirs['index'][:40])}, recall@10 "
              f"{theirs['recall_at_10']:.3f}, {theirs['queries_per_second']:.0f} q/s")
        print(f"ours at autofaiss's recall: {ours.get('at_autofaiss_recall')}")
        print(f"ours at autofaiss's speed ({theirs['queries_per_second']:.0f} q/s, interpolated on our curve): "
              f"recall@10 {ours.get('recall_at_autofaiss_speed')}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
