"""Search queries: encode (batched with concurrent requests) -> FAISS -> catalog rows, off the event loop."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.errors import ApiError
from service.schemas import SearchHit, SearchResponse
from service.state import Resources


def require_text_tower(res: Resources) -> None:
    if res.text_batcher is None:
        raise ApiError(400, "no_text_tower",
                       f"the configured {res.encoder.kind} encoder embeds images only; it cannot search by text "
                       "or classify into labels")


def nearest(res: Resources, query: np.ndarray, k: int) -> list[SearchHit]:
    """One query vector (dim,) -> the k best live items, in FAISS order (best first).

    Items deleted since the index version was published are still in FAISS but no longer
    live in the catalog; the search widens (4x at a time) until k live items are found or
    the index has no more, so a deletion never makes a query silently return fewer."""
    total = res.version.count
    fetch = min(k, total)
    while True:
        scores, ids = res.version.search(query[None, :], max(1, fetch))  # (1, fetch); id -1 = no more vectors
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        rows = res.catalog.get_many(i for i, _ in found)
        hits = [SearchHit.of(rows[i], s) for i, s in found if i in rows]
        if len(hits) >= k or fetch >= total:
            return hits[:k]
        fetch = min(total, fetch * 4)


async def search_text(res: Resources, query: str, k: int) -> SearchResponse:
    """The k items whose pictures best match ``query``."""
    require_text_tower(res)
    started = time.perf_counter()
    vector = await res.text_batcher.submit(query)  # (dim,)
    hits = await run_in_threadpool(nearest, res, vector, k)
    return SearchResponse(results=hits, took_ms=ms_since(started), index_version=res.version.name)


async def search_image(res: Resources, image: Image.Image, k: int) -> SearchResponse:
    """The k items that look most like ``image``."""
    started = time.perf_counter()
    vector = await res.image_batcher.submit(image)  # (dim,)
    hits = await run_in_threadpool(nearest, res, vector, k)
    return SearchResponse(results=hits, took_ms=ms_since(started), index_version=res.version.name)


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
