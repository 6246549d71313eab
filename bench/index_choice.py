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

Beside the automatic choice, each ``--factory`` (repeatable; ``{nlist}`` and ``{m}`` are filled in
as ``index.choose.n_lists(n)`` and dim / 4) is built and tuned to the same target, one index family
each: recall@10, bytes (the index file), queries/s and its query time over exact search's. Default:
IVF-Flat, IVF-PQ, and IVF-PQ with a refine stage on fp16 and on float32 copies; ``--factory none``
measures the automatic choice alone.

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


def base_vectors(encoder_spec: str, cache: Path | None = None) -> np.ndarray:
    """The emoji images embedded by ``encoder_spec`` (B, d); read from ``cache`` (.npy) when it exists,
    else written there, so that a rerun skips the encoder."""
    from index.decode import open_image
    from training.encoder import load_encoder

    if cache is not None and cache.exists():
        return np.load(cache)
    _, rows = emoji_rows()
    base = load_encoder(encoder_spec).encode_images([open_image(Path(r["file"])) for r in rows])
    if cache is not None:
        np.save(cache, base)
    return base


def vectors(n: int, queries: int, encoder_spec: str, sigma: float, seed: int = 0,
            cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    base = base_vectors(encoder_spec, cache)  # (B, d)
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
    p.add_argument("--base-vectors", type=Path, default=None,
                   help="the emoji embeddings as .npy: read if the file exists, else written (reruns skip the encoder)")


def recall_at_speed(curve: list[dict], qps: float) -> float | None:
    """Recall@10 of our index at ``qps`` queries/s: linear in log(q/s) between the two curve points around it."""
    points = sorted((c["queries_per_second"], c["recall_at_10"]) for c in curve)
    for (q0, r0), (q1, r1) in zip(points, points[1:]):
        if q0 <= qps <= q1:
            return round(r0 + (r1 - r0) * (np.log(qps / q0) / np.log(q1 / q0)), 4)
    return None  # outside the measured range


FAMILIES = ["IVF{nlist},Flat", "IVF{nlist},PQ{m}", "IVF{nlist},PQ{m},Refine(SQfp16)", "IVF{nlist},PQ{m},RFlat"]


def searched(index, q: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(recall@10, queries/s) of one batched search of ``q``."""
    from index.choose import recall_at_k

    started = time.perf_counter()
    _, found = index.search(q, 10)
    return recall_at_k(found, truth), len(q) / (time.perf_counter() - started)


def curve_of(index, tuned: dict, q: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Recall@10 and q/s along the index family's last knob, the others at their tuned values."""
    import faiss

    from index.families import family_of

    knobs = family_of(index).knobs(index)
    if not knobs:
        return []
    name, values = knobs[-1].name, knobs[-1].values
    chosen = tuned.get(name)
    curve = []
    for value in sorted(set(values) | ({chosen} if chosen else set())):
        faiss.ParameterSpace().set_index_parameter(index, name, value)
        recall, qps = searched(index, q, truth)
        curve.append({name: value, "recall_at_10": recall, "queries_per_second": qps})
    if chosen:
        faiss.ParameterSpace().set_index_parameter(index, name, chosen)
    return curve


def family_row(factory: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, budget: int, target: float,
               exact_qps: float, tmp: Path) -> dict:
    """One explicit factory built, tuned to ``target`` and measured beside the automatic choice."""
    import faiss

    from index.choose import build_tuned
    from index.families import family_of

    started = time.perf_counter()
    index, choice, tuning = build_tuned(x, np.arange(len(x), dtype=np.int64), factory, budget, target)
    build_s = time.perf_counter() - started
    faiss.write_index(index, str(tmp / "family.faiss"))
    recall, qps = searched(index, q, truth)
    print(f"{factory}: built and tuned in {build_s:.0f} s, recall@10 {recall:.3f}", file=sys.stderr, flush=True)
    return {"factory": factory, "family": family_of(index).name, "search_params": tuning["params"],
            "tuned_recall": tuning["recall"], "build_and_tune_seconds": round(build_s, 1),
            "estimated_bytes": choice.estimated_bytes, "bytes": (tmp / "family.faiss").stat().st_size,
            "recall_at_10": recall, "queries_per_second": qps, "query_time_vs_exact": round(exact_qps / qps, 4),
            "curve": curve_of(index, tuning["params"], q, truth)}


def auto_row(x: np.ndarray, q: np.ndarray, truth: np.ndarray, budget: int, target: float, exact_s: float,
             tmp: Path) -> tuple[dict, object, dict]:
    """The automatic choice built, tuned to ``target`` and measured: (its row, the index, its tuning)."""
    import faiss

    from index.choose import build_tuned, recall_at_k

    started = time.perf_counter()
    index, choice, tuning = build_tuned(x, np.arange(len(x), dtype=np.int64), "auto", budget, target)
    build_s = time.perf_counter() - started
    print(f"auto: {choice.factory} built and tuned in {build_s:.0f} s", file=sys.stderr, flush=True)
    started = time.perf_counter()
    _, found = index.search(q, 10)
    search_s = time.perf_counter() - started
    faiss.write_index(index, str(tmp / "auto.faiss"))
    return ({"factory": choice.factory, "reason": choice.reason, "estimated_bytes": choice.estimated_bytes,
             "bytes": (tmp / "auto.faiss").stat().st_size, "choice_params": choice.params, "tuning": tuning,
             "search_params": tuning["params"], "build_and_tune_seconds": round(build_s, 1),
             "recall_at_10": recall_at_k(found, truth), "queries_per_second": len(q) / search_s,
             "query_time_vs_exact": round(search_s / exact_s, 4)}, index, tuning)


def autofaiss_row(python: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, budget: str, threads: int,
                  tmp: Path) -> dict:
    """autofaiss at the same budget, run in its own venv's ``python``."""
    from index.choose import recall_at_k

    np.save(tmp / "x.npy", x)
    np.save(tmp / "q.npy", q)
    proc = subprocess.run([python, "-c", AUTOFAISS_SIDE, str(tmp / "x.npy"), str(tmp / "q.npy"),
                           budget, str(threads), str(tmp / "ids.npy")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"autofaiss failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"index": out["index"], "info": out["info"], "build_seconds": round(out["build_seconds"], 1),
            "recall_at_10": recall_at_k(np.load(tmp / "ids.npy"), truth),
            "queries_per_second": len(q) / out["search_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vector_arguments(p, n=1_000_000, name="index_choice_cpu")
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--encoder", default=None)
    p.add_argument("--autofaiss-python", default=None, help="python of a venv with autofaiss (skipped when absent)")
    p.add_argument("--factory", action="append", dest="factories", default=None,
                   help="also build and measure this factory (repeatable; {nlist}, {m} filled in; 'none': no others)")
    p.add_argument("--no-auto", action="store_true", help="measure the --factory rows only")
    a = p.parse_args()

    import faiss

    from index.__main__ import parse_bytes
    from index.choose import n_lists

    faiss.omp_set_num_threads(a.threads)
    budget = parse_bytes(a.budget)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = a.encoder or str(random_encoder("lookalike-tiny", tmp / "encoder.safetensors"))
        x, q = vectors(a.n, a.queries, spec, a.sigma, cache=a.base_vectors)
        started = time.perf_counter()
        _, truth = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        exact_s = time.perf_counter() - started
        # saved after every row, so that a run stopped by a time limit keeps what it measured
        result = {"command": "index_choice.py " + " ".join(sys.argv[1:]), "n": a.n, "dim": int(x.shape[1]),
                  "queries": a.queries, "budget": a.budget, "sigma": a.sigma, "threads": a.threads,
                  "exact_search_qps": a.queries / exact_s, "lookalike": None, "autofaiss": None, "families": []}
        ours = theirs = None
        if not a.no_auto:
            ours, index, tuning = auto_row(x, q, truth, budget, a.target_recall, exact_s, tmp)
            if a.autofaiss_python:
                theirs = autofaiss_row(a.autofaiss_python, x, q, truth, a.budget, a.threads, tmp)
            # our index along its speed/recall knob, to compare at autofaiss's speed and recall
            curve = ours["curve"] = curve_of(index, tuning["params"], q, truth)
            del index
            if theirs and curve:
                reach = [c for c in curve if c["recall_at_10"] >= theirs["recall_at_10"]]
                ours["at_autofaiss_recall"] = reach[0] if reach else None
                ours["recall_at_autofaiss_speed"] = recall_at_speed(curve, theirs["queries_per_second"])
            result.update(lookalike=ours, autofaiss=theirs)
            save(a.name, result)
        dims = {"nlist": n_lists(len(x)), "m": x.shape[1] // 4}
        for factory in [f for f in (a.factories or FAMILIES) if f != "none"]:
            result["families"].append(family_row(factory.format(**dims), x, q, truth, budget, a.target_recall,
                                                 a.queries / exact_s, tmp))
            save(a.name, result)
    path = save(a.name, result)
    report(result)
    print(f"wrote {path}")


def report(result: dict) -> None:
    ours, theirs = result["lookalike"], result["autofaiss"]
    if ours:
        print(f"ours: {ours['factory']} {ours['search_params']}, recall@10 {ours['recall_at_10']:.3f}, "
              f"{ours['queries_per_second']:.0f} q/s (exact: {result['exact_search_qps']:.0f} q/s)")
    if theirs:
        print(f"autofaiss: {theirs['info'].get('index_key', theirs['index'][:40])}, recall@10 "
              f"{theirs['recall_at_10']:.3f}, {theirs['queries_per_second']:.0f} q/s")
        print(f"ours at autofaiss's recall: {ours.get('at_autofaiss_recall')}")
        print(f"ours at autofaiss's speed ({theirs['queries_per_second']:.0f} q/s, interpolated on our curve): "
              f"recall@10 {ours.get('recall_at_autofaiss_speed')}")
    for row in result["families"]:
        print(f"{row['family']:>14} {row['factory']}: {row['search_params']}, recall@10 {row['recall_at_10']:.3f}, "
              f"{row['bytes'] / 2**20:.0f} MiB, {row['queries_per_second']:.0f} q/s, "
              f"{row['query_time_vs_exact']:.3f} of exact search's time")


if __name__ == "__main__":
    main()
