"""Choosing a FAISS index for a vector count and a memory budget, and tuning its search parameters.

The rule follows autofaiss's reasoning, written small enough to read:

- few vectors (``EXACT_BELOW``): ``Flat`` — exact search is already fast, and nothing to tune;
- the graph fits the budget and the count is moderate: ``HNSW32`` — the fastest queries at high
  recall when memory allows (each vector keeps its float32 copy plus ~2·32 neighbour links);
- the raw vectors fit: ``IVF{nlist},Flat`` — exact distances within the probed lists;
- half of them fit: ``IVF{nlist},PQ{m},Refine(SQfp16)`` — codes (``m`` ≤ dim/4 bytes) pick
  candidates in the probed lists, float16 copies rank them: recall near IVF-Flat's;
- otherwise: ``IVF{nlist},PQ{m}`` with the largest ``m`` (bytes per vector) that fits.

``nlist`` is about 4·√n, a power of two, with at least ``MIN_POINTS_PER_LIST`` training vectors
per list (FAISS warns below 39). Memory estimates are for the index alone, as FAISS stores it.

``tune`` then raises the family's search parameters (``nprobe`` for IVF, ``efSearch`` for HNSW; see
``index.families``) until recall@k against exact search reaches the target, on queries drawn from
the indexed vectors themselves with each query's own entry left out of both answers (it is always
found, and would count as a free hit); the values are stored in the version's manifest and applied
whenever the version is opened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import faiss
import numpy as np

from index.faiss_build import new_index, train, training_size
from index.families import Knob, family_of

EXACT_BELOW = 20_000
HNSW_M = 32
HNSW_MAX = 5_000_000
MIN_POINTS_PER_LIST = 39
TIMING_ROUNDS = 3  # exact vs tuned search, alternated; the best of each decides whether the index pays
TIMED_QUERIES = 100  # single-query searches per timing round
TUNING_QUERIES = 500  # indexed vectors that tuning searches with
TUNING_K = 10  # recall@k is what the search parameters are tuned for
TIMING_SAMPLE = 262_144  # vectors of the training sample that time exact search for IVF (then scaled)


@dataclass
class IndexChoice:
    factory: str
    reason: str
    estimated_bytes: int | None
    params: dict[str, Any] = field(default_factory=dict)


def n_lists(n: int) -> int:
    """About 4·√n inverted lists, a power of two, each with at least MIN_POINTS_PER_LIST vectors."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    cap = max(1, n // MIN_POINTS_PER_LIST)
    return int(max(1, min(target, 2 ** int(math.log2(cap)), 65_536)))


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """The memory an index of ``n`` vectors needs, roughly as FAISS lays it out (its family's estimate)."""
    return family_of(factory).estimate_bytes(factory, n, dim)


def pq_bytes(dim: int, most: int) -> int:
    """The largest PQ code size (bytes, one per sub-vector) of at most ``most`` that divides ``dim``."""
    return max(m for m in range(1, max(1, most) + 1) if dim % m == 0)


def choose_index(n: int, dim: int, memory_budget: int) -> IndexChoice:
    """The index to build for ``n`` vectors of ``dim`` floats within ``memory_budget`` bytes."""
    if n <= 0:
        raise ValueError("no vectors to index")
    flat = estimate_bytes("Flat", n, dim)
    if n < EXACT_BELOW and flat <= memory_budget:
        return IndexChoice("Flat", f"{n} vectors: exact search is fast at this size", flat)
    hnsw = f"HNSW{HNSW_M}"
    if n <= HNSW_MAX and estimate_bytes(hnsw, n, dim) <= memory_budget:
        return IndexChoice(hnsw, "the graph fits the memory budget: fastest queries at high recall",
                           estimate_bytes(hnsw, n, dim), {"M": HNSW_M})
    nlist = n_lists(n)
    ivf_flat = f"IVF{nlist},Flat"
    if estimate_bytes(ivf_flat, n, dim) <= memory_budget:
        return IndexChoice(ivf_flat, "raw vectors fit the budget, the graph does not: inverted lists over "
                           "exact vectors", estimate_bytes(ivf_flat, n, dim), {"nlist": nlist})
    m = pq_bytes(dim, min(64, dim // 4))
    refined = f"IVF{nlist},PQ{m},Refine(SQfp16)"
    if estimate_bytes(refined, n, dim) <= memory_budget:
        return IndexChoice(refined, "float16 copies fit the budget, raw vectors do not: PQ codes find candidates, "
                           "the copies rank them", estimate_bytes(refined, n, dim), {"nlist": nlist, "m": m})
    for m in sorted((m for m in range(1, min(dim, 64) + 1) if dim % m == 0), reverse=True):
        factory = f"IVF{nlist},PQ{m}"
        if estimate_bytes(factory, n, dim) <= memory_budget:
            return IndexChoice(factory, f"only compressed codes fit: {m} bytes per vector",
                               estimate_bytes(factory, n, dim), {"nlist": nlist, "m": m})
    smallest = estimate_bytes(f"IVF{nlist},PQ1", n, dim)
    raise ValueError(f"{n} vectors of dim {dim} do not fit {memory_budget / 2**20:.0f} MiB even as 1-byte PQ codes "
                     f"(need ~{smallest / 2**20:.0f} MiB); raise --memory-budget")


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (ids int64 (Q, k); -1 slots count as misses)."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def without_self(neighbours: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row of ``neighbours`` (Q, k + 1) without the query's own id ``own[i]`` (or, where the
    row lacks it, without its last entry): (Q, k), order kept."""
    drop = neighbours == own[:, None]
    drop &= np.cumsum(drop, axis=1) == 1  # only its first occurrence
    drop[~drop.any(axis=1), -1] = True
    return neighbours[~drop].reshape(len(neighbours), k)


class VectorSource(Protocol):
    """The vectors a build reads: ``count`` of them, of ``dim`` floats, streamed in one fixed order
    by ``chunks()`` as (ids int64, vectors float32) pieces, and fetched by position in that order
    with ``take(positions)`` (positions sorted; an item gone meanwhile may be missing)."""

    count: int
    dim: int

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ArraySource:
    """Vectors already in memory, as a ``VectorSource``."""

    vectors: np.ndarray
    ids: np.ndarray
    chunk: int = 65_536

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.ids = np.ascontiguousarray(self.ids, dtype=np.int64)
        self.count, self.dim = self.vectors.shape

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.count, self.chunk):
            yield self.ids[start:start + self.chunk], self.vectors[start:start + self.chunk]

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[positions], self.vectors[positions]


class ExactNeighbours:
    """The exact top-``k`` ids by inner product of fixed queries, over vectors seen chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.heap = faiss.ResultHeap(len(queries), k, keep_max=True)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(vectors):
            scores, positions = faiss.knn(self.queries, vectors, min(self.k, len(vectors)),
                                          metric=faiss.METRIC_INNER_PRODUCT)
            self.heap.add_result(scores, ids[positions])

    def ids(self) -> np.ndarray:
        self.heap.finalize()
        return self.heap.I


def tune(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, target_recall: float = 0.95, k: int = 10,
         queries: int = 500, seed: int = 0, time_search: bool = True) -> dict[str, Any]:
    """``tune_on`` with ``queries`` of the indexed vectors (in memory) as queries, their exact
    neighbours by brute force as the truth, and brute force over them as exact search's timing."""
    if not family_of(index).knobs(index) or len(vectors) < 2:
        return tune_on(index, np.zeros((0, index.d), np.float32), np.zeros(0, np.int64), None, target_recall, k)
    source = ArraySource(vectors, ids)
    flat = source.vectors  # exact search's database, for truth and timing
    q, own = tuning_queries(source, queries, seed)
    k = min(k, len(vectors) - 1)
    _, positions = faiss.knn(q, flat, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    exact = (lambda one, kk: faiss.knn(one, flat, kk, metric=faiss.METRIC_INNER_PRODUCT)) if time_search else None
    return tune_on(index, q, own, source.ids[positions], target_recall, k, exact)


def tuning_queries(source: VectorSource, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) of ``queries`` indexed vectors drawn at random: the queries ``tune_on`` measures with."""
    pick = np.sort(np.random.default_rng(seed).choice(source.count, size=min(queries, source.count), replace=False))
    own, q = source.take(pick)
    return np.ascontiguousarray(q, dtype=np.float32), np.asarray(own, dtype=np.int64)


def smallest_reaching(knob: Knob, target: float, measure: Callable[[int], tuple[float, float]]) -> tuple[int, float]:
    """The smallest value of ``knob`` whose measured recall reaches ``target``, and that recall:
    the values in turn until one does, then a bisection between it and the last that fell short,
    to within 1/8 (a 1.2x overshoot of efSearch costs 1.2x the query time). When none reaches
    it, the largest value (the closest the index gets). ``measure(value)`` -> (recall, seconds)."""
    below, best = None, None
    for value in knob.values:
        recall, _ = measure(value)
        if recall >= target:
            best = (value, recall)
            break
        below = value
    if best is None:
        return knob.values[-1], recall
    if below is not None:
        low, high = below, best[0]
        while high - low > max(1, high // 8):
            mid = (low + high) // 2
            recall, _ = measure(mid)
            if recall >= target:
                high, best = mid, (mid, recall)
            else:
                low = mid
    return best


def tune_on(index: faiss.Index, q: np.ndarray, own: np.ndarray, neighbours: np.ndarray | None,
            target_recall: float = 0.95, k: int = 10,
            exact: Callable[[np.ndarray, int], Any] | None = None, exact_scale: float = 1.0) -> dict[str, Any]:
    """Set the smallest search parameters whose recall@k reaches ``target_recall``; returns what was measured.

    ``q`` are indexed vectors (ids ``own``) and ``neighbours`` their exact top-(k + 1) ids; each
    query's own entry is left out of both answers (it is always found, and would count as a free hit).
    The family's knobs are tuned in its order with ``smallest_reaching``; while one is tuned, those
    after it stay at their largest value, and of the recall lost to the target each knob gets an
    equal share (two knobs at 0.95: the first to 0.975, then the second to 0.95). When ``exact`` (a
    search over every vector) is given, also timed, one query at a time on ``TIMED_QUERIES`` of the
    queries, alternately and best of ``TIMING_ROUNDS``: exact search (``exact_seconds``, multiplied
    by ``exact_scale`` when ``exact`` scans only part of the vectors) and the index at the chosen
    values (``seconds``), so a caller can see whether the approximation pays.
    """
    knobs = family_of(index).knobs(index)
    if not knobs:
        return {"params": {}, "recall": 1.0, "k": k, "note": "exact index"}
    if len(q) == 0 or index.ntotal < 2:
        return {"params": {}, "recall": 1.0, "k": k, "note": "a single vector: nothing to tune"}
    k = min(k, neighbours.shape[1] - 1)
    truth = without_self(neighbours[:, :k + 1], own, k)
    space = faiss.ParameterSpace()
    tried: list[dict[str, Any]] = []

    def measure(settings: dict[str, int]) -> tuple[float, float]:
        for name, value in settings.items():
            space.set_index_parameter(index, name, value)
        started = time.perf_counter()
        found = index.search(q, k + 1)[1]
        seconds = time.perf_counter() - started
        recall = recall_at_k(without_self(found, own, k), truth)
        tried.append({**settings, "recall": round(recall, 4), "seconds": round(seconds, 4)})
        return recall, seconds

    chosen: dict[str, int] = {}
    for i, knob in enumerate(knobs):
        later = {after.name: after.values[-1] for after in knobs[i + 1:]}
        goal = 1 - (1 - target_recall) * (i + 1) / len(knobs)
        chosen[knob.name], recall = smallest_reaching(
            knob, goal, lambda value, knob=knob, later=later: measure({**chosen, knob.name: value, **later}))
    for name, value in chosen.items():
        space.set_index_parameter(index, name, value)
    result = {"params": chosen, "recall": recall, "k": k, "target": target_recall, "queries": len(q),
              "tried": tried}
    if exact is None:
        return result
    # The timings that decide whether the approximation pays (see build_from), in the regime the
    # service searches in: one query at a time. (Batched, FAISS's exact search switches to BLAS and
    # its cost per query changes several-fold with the batch size: at 1M vectors, 500 queries took
    # 2x as long per query as 1000.) Exact and approximate alternate query by query; best of
    # TIMING_ROUNDS rounds each, so that one slow moment on a busy machine does not decide it.
    timed = q[:TIMED_QUERIES]
    seconds = exact_seconds = float("inf")
    for _ in range(TIMING_ROUNDS):
        exact_round = approximate_round = 0.0
        for one in timed:
            one = one[None, :]
            started = time.perf_counter()
            exact(one, k + 1)
            exact_round += time.perf_counter() - started
            started = time.perf_counter()
            index.search(one, k + 1)
            approximate_round += time.perf_counter() - started
        exact_seconds, seconds = min(exact_seconds, exact_round), min(seconds, approximate_round)
    return {**result, "seconds": seconds, "exact_seconds": exact_seconds * exact_scale, "timed_queries": len(timed),
            "timing_rounds": TIMING_ROUNDS, **({"exact_scale": exact_scale} if exact_scale != 1.0 else {})}


def build_tuned(vectors: np.ndarray, ids: np.ndarray, factory: str, memory_budget: int,
                target_recall: float = 0.95) -> tuple[faiss.Index, IndexChoice, dict[str, Any]]:
    """``build_from`` over vectors in memory."""
    return build_from(ArraySource(vectors, ids), factory, memory_budget, target_recall)


def build_from(source: VectorSource, factory: str, memory_budget: int, target_recall: float = 0.95,
               seed: int = 0) -> tuple[faiss.Index, IndexChoice, dict[str, Any]]:
    """Build and tune the index for the vectors of ``source``: ``factory`` as given, or chosen (``"auto"``).

    The vectors are streamed, never all held: the training sample (IVF) and the tuning queries are
    fetched first, then each chunk is added to the index and searched exactly by the queries, so
    their true neighbours build up alongside. Memory: the index, the training sample, one chunk.

    An automatic choice that, tuned to the target recall, answers no faster than exact search (one
    query at a time, on ``TIMED_QUERIES`` of the tuning queries; exact search over the index's own
    full-precision vectors, see ``Family.exact_search``, or brute force over up to ``TIMING_SAMPLE`` of the
    training sample, scaled to every vector) is replaced by ``Flat`` when that fits the budget
    (a second pass over the source): exact results at the same or better speed. (Data whose
    neighbours are hard to tell apart, e.g. many near duplicates, can need so large an
    efSearch/nprobe that the approximation stops paying.)
    """
    n, dim = source.count, source.dim
    if factory == "auto":
        choice = choose_index(n, dim, memory_budget)
    else:
        try:
            estimated: int | None = estimate_bytes(factory, n, dim)
        except ValueError:
            estimated = None
        choice = IndexChoice(factory, "given", estimated)
    index = new_index(dim, choice.factory)
    rng = np.random.default_rng(seed)
    size = training_size(index, n)
    sample = None
    if size:
        sample = source.take(np.sort(rng.choice(n, size, replace=False)))[1]
        train(index, sample)
    q, own = np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
    neighbours = None
    if family_of(index).knobs(index) and n >= 2:
        q, own = tuning_queries(source, TUNING_QUERIES, seed)
        neighbours = ExactNeighbours(q, min(TUNING_K, n - 1) + 1)
    fill_from(index, source, neighbours)
    exact, scale = None, 1.0
    if factory == "auto":  # the timings decide only then
        exact = family_of(index).exact_search(index)
        if exact is None and sample is not None and len(sample):
            # brute force over part of the training sample, scaled to every vector: a scan's cost is
            # linear in the vectors, and TIMING_SAMPLE of them is already past the CPU's caches
            reference = np.array(sample[:TIMING_SAMPLE])  # a copy: the rest of the sample is freed
            exact = lambda one, kk: faiss.knn(one, reference, kk, metric=faiss.METRIC_INNER_PRODUCT)  # noqa: E731
            scale = index.ntotal / len(reference)
    del sample
    tuning = tune_on(index, q, own, neighbours.ids() if neighbours else None, target_recall, TUNING_K, exact, scale)
    flat_bytes = estimate_bytes("Flat", n, dim)
    if (factory == "auto" and choice.factory != "Flat" and "exact_seconds" in tuning
            and tuning["seconds"] >= tuning["exact_seconds"] and flat_bytes <= memory_budget):
        settings = ", ".join(f"{name}={value}" for name, value in tuning["params"].items())
        reason = (f"{choice.factory} needed {settings} for recall@{tuning['k']} {tuning['recall']:.3f} and then "
                  f"searched no faster than exact search ({tuning['seconds']:.3f} s vs "
                  f"{tuning['exact_seconds']:.3f} s for {tuning['timed_queries']} single-query searches): exact search")
        rejected = {"factory": choice.factory, **tuning}
        choice = IndexChoice("Flat", reason, flat_bytes, {"rejected": rejected})
        index = fill_from(new_index(dim, "Flat"), source)
        tuning = {"params": {}, "recall": 1.0, "k": tuning["k"], "note": "exact index"}
    return index, choice, tuning


def fill_from(index: faiss.Index, source: VectorSource, neighbours: ExactNeighbours | None = None) -> faiss.Index:
    """Add every chunk of ``source`` to a trained ``index`` (and to ``neighbours``' exact search)."""
    for ids, vectors in source.chunks():
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        if neighbours is not None:
            neighbours.add(ids, vectors)
    return index
