"""Search queries: encode (batched with concurrent requests) -> FAISS -> catalog rows, off the event loop."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from index.version import IndexVersion
from service.batching import Batcher
from service.errors import ApiError, validation_error
from service.filters import Predicate
from service.schemas import SearchHit, SearchResponse
from service.state import Resources

EXHAUSTIVE_SHARE = 16  # a widened search for more than 1/16 of the vectors visits all of them


def require_text_tower(res: Resources) -> None:
    if res.text_batcher is None:
        raise ApiError(400, "no_text_tower",
                       f"the configured {res.encoder.kind} encoder embeds images only; it cannot search by text "
                       "or classify into labels")


def nearest_in(version: IndexVersion, res: Resources, query: np.ndarray, k: int, offset: int = 0,
               exclude: int | None = None, keep: Predicate | None = None) -> list[SearchHit]:
    """One query vector (dim,) -> live items ``offset .. offset + k - 1`` of ``version``, in FAISS order
    (best first); a request keeps the version it started with, even if a newer one is swapped in.

    Items deleted since the index version was published are still in FAISS but no longer
    live in the catalog, ``exclude`` is left out on purpose, and ``keep`` (a metadata filter)
    may reject many; the search widens (4x at a time) until enough items pass or every vector
    has been visited (exhaustively, once it must reach a large share of the index: an
    approximate index need not return them all), so none of these makes a query silently
    return fewer."""
    want = offset + k
    total = version.count + res.fresh.count
    fetch = min(want + (exclude is not None), total)
    exhaustive = version.visits_all
    while True:
        # (1, fetch); id -1 = no more vectors
        scores, ids = version.search(query[None, :], max(1, fetch), exhaustive=exhaustive)
        best: dict[int, float] = {}
        for i, s in [*zip(ids[0].tolist(), scores[0].tolist()), *res.fresh.search(query, fetch)]:
            if i >= 0 and i != exclude and s > best.get(i, -np.inf):  # an uploaded item may be in both
                best[i] = s
        found = sorted(best.items(), key=lambda pair: -pair[1])
        rows = res.catalog.get_many(i for i, _ in found)
        hits = [SearchHit.of(rows[i], s) for i, s in found
                if i in rows and (keep is None or keep(rows[i].meta or {}))]
        if len(hits) >= want or (fetch >= total and exhaustive):
            return hits[offset:want]
        fetch = min(total, fetch * 4)
        # Once the search must reach a large share of the index, an approximate index may not get
        # there (a graph stops short of large k, IVF probes a few lists): visit every vector instead.
        exhaustive = exhaustive or fetch * EXHAUSTIVE_SHARE >= total


async def search_text(res: Resources, query: str, k: int, offset: int = 0,
                      keep: Predicate | None = None) -> SearchResponse:
    """The k items whose pictures best match ``query``."""
    require_text_tower(res)
    return await _encode_and_answer(res, res.text_batcher, query, k, offset, keep)


async def search_image(res: Resources, image: Image.Image, k: int, offset: int = 0,
                       keep: Predicate | None = None) -> SearchResponse:
    """The k items that look most like ``image``."""
    return await _encode_and_answer(res, res.image_batcher, image, k, offset, keep)


async def search_similar(res: Resources, item_id: int, k: int, offset: int = 0,
                         keep: Predicate | None = None) -> SearchResponse:
    """More like this: the k items nearest to item ``item_id``'s stored vector, the item left out."""
    started = time.perf_counter()
    item = await run_in_threadpool(res.catalog.get, item_id)
    if item is None or item.collection != res.settings.collection:
        raise ApiError(404, "not_found", f"no item with id {item_id}")
    vector = await run_in_threadpool(res.catalog.vector_of, item_id, res.encoder.fingerprint)
    if vector is None:
        raise ApiError(404, "not_found", f"item {item_id} has no vector by the served encoder; re-index it")
    return await _answer(res, vector, k, offset, started, exclude=item_id, keep=keep)


async def search_vector(res: Resources, values: list[float], k: int, offset: int = 0,
                        keep: Predicate | None = None) -> SearchResponse:
    """The k items nearest to a caller's vector (checked for size and finiteness, then normalised)."""
    started = time.perf_counter()
    if len(values) != res.encoder.dim:
        raise validation_error(("body", "vector"), f"the vector must have {res.encoder.dim} numbers (the encoder's "
                               f"dim), not {len(values)}", "wrong_dimension")
    vector = np.asarray(values, dtype=np.float64)
    # Scaled by its largest entry first, so that any finite vector that is not all zeros normalises
    # (1e300 or 1e-300 included) before it becomes float32.
    peak = float(np.abs(vector).max()) if np.all(np.isfinite(vector)) else float("nan")
    if not np.isfinite(peak) or peak == 0.0:
        raise validation_error(("body", "vector"), "the vector must be finite and not all zeros", "bad_vector")
    vector = vector / peak
    return await _answer(res, (vector / np.linalg.norm(vector)).astype(np.float32), k, offset, started, keep=keep)


async def _encode_and_answer(res: Resources, batcher: Batcher, query: object, k: int, offset: int,
                             keep: Predicate | None) -> SearchResponse:
    """Encode ``query`` with ``batcher`` and search with the vector; the search runs in the encoder's
    worker thread when the query is encoded alone (see ``Batcher.submit``)."""
    started = time.perf_counter()
    version = res.version  # one version for the whole request, even if a newer one is swapped in meanwhile
    hits = await batcher.submit(query, then=lambda vector: nearest_in(version, res, vector, k, offset, keep=keep))
    return SearchResponse(results=hits, took_ms=ms_since(started), index_version=version.name)


async def _answer(res: Resources, vector: np.ndarray, k: int, offset: int, started: float,
                  exclude: int | None = None, keep: Predicate | None = None) -> SearchResponse:
    version = res.version  # one version for the whole request, even if a newer one is swapped in meanwhile
    hits = await run_in_threadpool(nearest_in, version, res, vector, k, offset, exclude, keep)
    return SearchResponse(results=hits, took_ms=ms_since(started), index_version=version.name)


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
