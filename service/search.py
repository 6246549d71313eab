"""Search queries: encode (batched with concurrent requests) -> FAISS -> catalog rows, off the event loop."""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.errors import ApiError
from service.schemas import SearchHit, SearchResponse
from service.state import Resources

log = logging.getLogger(__name__)


def require_text_tower(res: Resources) -> None:
    if res.text_batcher is None:
        raise ApiError(400, "no_text_tower",
                       f"the configured {res.encoder.kind} encoder embeds images only; it cannot search by text "
                       "or classify into labels")


def nearest(res: Resources, query: np.ndarray, k: int) -> list[SearchHit]:
    """One query vector (dim,) -> up to k hits, in FAISS order (best first)."""
    scores, ids = res.version.search(query[None, :], k)  # (1, k), (1, k); id -1 = no more vectors
    found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    rows = res.catalog.get_many(i for i, _ in found)
    missing = [i for i, _ in found if i not in rows]
    if missing:
        log.warning("index version %s has ids missing from the catalog: %s", res.version.name, missing[:10])
    return [SearchHit.of(rows[i], s) for i, s in found if i in rows]


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
