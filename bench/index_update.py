"""Publishing a day's changes: an update of the current index version against a full rebuild, in one run.

A catalog (SQLite) holds ``--n`` vectors (the emoji images embedded by a random ``lookalike-tiny``,
repeated with small perturbations, as in ``bench/index_choice.py``); the automatic choice for them
at ``--budget`` is built and published. Then a day's changes land in the catalog: ``--change``
of the items deleted, as many changed (same item, new content and vector) and as many added. Both
ways of publishing them are timed on the same catalog state, one after the other:

- update: ``Publisher.publish`` as the job and the service call it (diff the member list with the
  catalog, apply adds / removals / tombstones to a copy of the index, publish);
- rebuild: the same with ``rebuild=True`` (read every vector, choose, build, tune, publish).

Each published version is then searched with fresh queries: recall@10 against exact search over
the live vectors, and queries/s, so the update's speed is not bought with worse answers. Last, an
untimed rebuild under ``tracemalloc`` gives the build's peak memory outside FAISS (numpy arrays,
catalog rows) against the size of the raw vectors: a build streams them from the catalog.

    python bench/index_update.py [--n 200000] [--change 0.01] [--budget 1G]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from common import REPO, random_encoder, save
from index_choice import vector_arguments, vectors

sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vector_arguments(p, n=200_000, name="index_update_cpu")
    p.add_argument("--change", type=float, default=0.01, help="fraction deleted, and as many changed and added")
    a = p.parse_args()

    import faiss

    from index.__main__ import parse_bytes
    from index.catalog import Catalog, NewItem
    from index.choose import recall_at_k
    from index.manifest import IndexPolicy
    from index.publish import Publisher
    from index.verify import verify
    from index.version import open_current
    from training.encoder import load_encoder

    faiss.omp_set_num_threads(a.threads)
    budget = parse_bytes(a.budget)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = load_encoder(str(random_encoder("lookalike-tiny", tmp / "encoder.safetensors")))
        changes = int(a.n * a.change)
        x, q = vectors(a.n + 2 * changes, a.queries, str(encoder.source), a.sigma)
        base, fresh = x[:a.n], x[a.n:]
        catalog = Catalog(f"sqlite:///{tmp / 'catalog.db'}")
        catalog.migrate()

        def write(names: list[str], tag: str, v: np.ndarray) -> list[int]:
            ids = []
            for start in range(0, len(names), 10_000):
                ids += catalog.write_batch("default", encoder.fingerprint,
                                           [NewItem(s, f"{s}-{tag}", {}) for s in names[start:start + 10_000]],
                                           v[start:start + 10_000])
            return ids

        started = time.perf_counter()
        ids = write([f"img{i}" for i in range(a.n)], "v1", base)
        catalog_s = time.perf_counter() - started
        out = tmp / "index"
        started = time.perf_counter()
        Publisher(catalog, out, encoder).publish("default", IndexPolicy(memory_budget=budget))
        first_s = time.perf_counter() - started
        print(f"{a.n} vectors: catalog written in {catalog_s:.0f} s, first build {first_s:.0f} s "
              f"({open_current(out).manifest.factory})")

        rng = np.random.default_rng(1)
        picked = rng.choice(a.n, 2 * changes, replace=False)
        gone, changed = picked[:changes], picked[changes:]
        catalog.delete("default", [ids[i] for i in gone])
        write([f"img{i}" for i in changed], "v2", fresh[:changes])
        new_ids = write([f"new{i}" for i in range(changes)], "v1", fresh[changes:])
        # the ground truth: exact search over what is live now
        current = base.copy()
        current[changed] = fresh[:changes]
        keep = np.ones(a.n, dtype=bool)
        keep[gone] = False
        live_ids = np.concatenate([np.asarray(ids)[keep], new_ids])
        _, nearest = faiss.knn(q, np.concatenate([current[keep], fresh[changes:]]), 10,
                               metric=faiss.METRIC_INNER_PRODUCT)
        truth = live_ids[nearest]
        del current

        results = {}
        for how in ("update", "rebuild"):
            started = time.perf_counter()
            published = Publisher(catalog, out, encoder).publish("default", IndexPolicy(memory_budget=budget),
                                                             rebuild=how == "rebuild")
            seconds = time.perf_counter() - started
            v = open_current(out)
            started = time.perf_counter()
            _, found = v.search(q, 10)
            search_s = time.perf_counter() - started
            check = verify(out, catalog.url)
            results[how] = {"action": published.action, "detail": published.detail, "seconds": round(seconds, 2),
                            "factory": v.manifest.factory, "search_params": v.manifest.search_params,
                            "stored": v.manifest.stored, "tombstones": v.manifest.tombstones,
                            "recall_at_10": recall_at_k(found, truth), "queries_per_second": round(len(q) / search_s),
                            "verify_ok": check.ok}
            print(f"{how}: {published.action} in {seconds:.1f} s ({published.detail}); recall@10 "
                  f"{results[how]['recall_at_10']:.3f} at {results[how]['queries_per_second']} q/s; "
                  f"verify {'ok' if check.ok else 'MISMATCH'}")
        # Memory of a full build outside FAISS (numpy arrays, catalog rows: what tracemalloc sees),
        # against the raw vectors' size; untimed, as tracing slows every allocation.
        tracemalloc.start()
        Publisher(catalog, out, encoder).publish("default", IndexPolicy(memory_budget=budget), rebuild=True)
        python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        raw = a.n * x.shape[1] * 4  # the live vectors: n - deleted + added
        print(f"rebuild's peak Python/numpy memory: {python_peak / 2**20:.0f} MiB, "
              f"{python_peak / raw:.2f} of the raw vectors ({raw / 2**20:.0f} MiB)")
        catalog.dispose()

    ratio = results["update"]["seconds"] / results["rebuild"]["seconds"]
    result = {"command": "index_update.py " + " ".join(sys.argv[1:]), "n": a.n, "dim": int(x.shape[1]),
              "changes": {"deleted": changes, "changed": changes, "added": changes}, "budget": a.budget,
              "threads": a.threads, "catalog_write_seconds": round(catalog_s, 1),
              "first_build_seconds": round(first_s, 1), **results, "update_over_rebuild_seconds": round(ratio, 4),
              "rebuild_python_peak_bytes": python_peak, "raw_vector_bytes": raw}
    path = save(a.name, result)
    print(f"update / rebuild time: {ratio:.3f}; wrote {path}")


if __name__ == "__main__":
    main()
