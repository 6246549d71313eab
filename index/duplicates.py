"""Near-duplicates: pairs of live items whose embeddings are at least ``threshold`` similar.

Each item's exact vector (from the catalog) queries the published index for its ``k``
nearest neighbours, so the cost follows the index (an HNSW or IVF index keeps it far
below the n² of comparing every pair); pairs are reported once, most similar first,
and grouped into clusters of items that are transitively near-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from index.catalog import Catalog
from index.version import IndexVersion


@dataclass
class DuplicateReport:
    threshold: float
    items: int
    pairs: list[tuple[int, int, float]]  # (id a, id b, cosine similarity), a < b, most similar first
    groups: list[list[int]] = field(default_factory=list)  # clusters of 2+ ids, largest first


def find_duplicates(version: IndexVersion, catalog: Catalog, threshold: float = 0.95, k: int = 10,
                    chunk: int = 4096) -> DuplicateReport:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    collection = version.manifest.collection
    k = min(k + 1, max(1, version.count))  # +1: an item finds itself
    best: dict[tuple[int, int], float] = {}
    n = 0
    for ids, vectors in catalog.live_vectors(collection, version.fingerprint, chunk):
        n += len(ids)
        scores, found = version.search(vectors, k)
        for query, row_scores, row_ids in zip(ids.tolist(), scores, found):
            for score, other in zip(row_scores.tolist(), row_ids.tolist()):
                if other < 0 or other == query or score < threshold:
                    continue
                pair = (min(query, other), max(query, other))
                best[pair] = max(best.get(pair, -2.0), score)
    pairs = sorted(((a, b, s) for (a, b), s in best.items()), key=lambda p: (-p[2], p[0], p[1]))
    return DuplicateReport(threshold, n, pairs, _groups(pairs))


def _groups(pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components of the pair graph (union-find)."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(root(x), []).append(x)
    return sorted((sorted(m) for m in members.values()), key=lambda m: (-len(m), m[0]))


def format_report(report: DuplicateReport, catalog: Catalog, limit: int = 20) -> str:
    shown = report.pairs[:limit]
    items = catalog.get_many({i for a, b, _ in shown for i in (a, b)})
    lines = [f"{len(report.pairs)} pairs at cosine >= {report.threshold} among {report.items} items, "
             f"in {len(report.groups)} groups (largest: {len(report.groups[0]) if report.groups else 0})"]
    for a, b, score in shown:
        sa = items[a].source if a in items else "?"
        sb = items[b].source if b in items else "?"
        lines.append(f"  {score:.4f}  {a} {sa}  ~  {b} {sb}")
    if len(report.pairs) > limit:
        lines.append(f"  ... {len(report.pairs) - limit} more (--json writes them all)")
    return "\n".join(lines)


def as_json(report: DuplicateReport) -> dict:
    return {"threshold": report.threshold, "items": report.items,
            "pairs": [{"a": a, "b": b, "score": round(float(s), 6)} for a, b, s in report.pairs],
            "groups": report.groups}
