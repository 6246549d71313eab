"""``GET /v1/collections/{name}/facets`` and ``/encoder``: what the web page needs to describe a collection.

Facets are the metadata values a person can filter by (e.g. vendor, category): keys whose values
are few, counted over the collection's live items. The encoder route tells how the encoder was
made, from the run summary that training stored in the encoder file. Both are read-only and
bounded: facets read at most ``FACET_SCAN`` items' metadata and list at most ``FACET_VALUES``
values per key."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from index.catalog import Item
from service.errors import ApiError
from service.keys import AUTH_ERRORS, require
from service.schemas import ErrorResponse
from service.state import Resources

FACET_SCAN = 20_000  # items whose metadata are read; a larger collection's facets come from its first items
FACET_VALUES = 40  # a key with more distinct values than this is not a facet (names, ids, paths)

router = APIRouter(prefix="/collections", tags=["collections"], dependencies=[Depends(require("read"))],
                   responses={**AUTH_ERRORS, 404: {"model": ErrorResponse,
                                                   "description": "`unknown_collection`"}})


class FacetValue(BaseModel):
    value: str | int | float | bool
    count: int = Field(description="live items with this value")


class Facet(BaseModel):
    key: str = Field(description="metadata key; filter with {key: value}")
    values: list[FacetValue] = Field(description="most frequent first")


class Facets(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{
        "collection": "default", "scanned": 766, "complete": True,
        "facets": [{"key": "vendor", "values": [{"value": "google", "count": 383},
                                                {"value": "twitter", "count": 383}]}]}]}}

    collection: str
    scanned: int = Field(description="items whose metadata were read")
    complete: bool = Field(description="whether every live item was read (false: the collection is larger "
                                       f"than {FACET_SCAN} items and the counts cover the first ones)")
    facets: list[Facet]


class QualityTable(BaseModel):
    title: str
    columns: list[str]
    rows: list[list[str | float | None]] = Field(description="first cell: the encoder (untrained / trained)")


class Training(BaseModel):
    method: str | None = None
    data: str | None = Field(None, description="what it was trained on (the file name, not its path)")
    examples: int | None = Field(None, description="image-caption pairs (CLIP) or images (image-only methods)")
    model: str | None = Field(None, description="open_clip model name or backbone")
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    world_size: int | None = None
    train_seconds: float | None = None
    final_loss: float | None = None
    finished: str | None = None
    pretrained: str | None = Field(None, description="the open_clip weights it was loaded from")


class EncoderAbout(BaseModel):
    collection: str
    kind: str = Field(description="clip, simclr, moco, rotnet")
    fingerprint: str
    dim: int
    can_encode_text: bool
    preprocess: dict[str, Any] = Field(description="input size, mean, std, interpolation, resize mode")
    training: Training | None = Field(None, description="from the encoder file's run summary; null if it has none")
    quality: list[QualityTable] = Field(description="the measurements training stored (may be empty)")


def _served(request: Request, name: str) -> Resources:
    served = getattr(request.app.state, "collections", {})
    if not served:
        raise ApiError(503, "unavailable", "the service is not ready: its encoders and indexes are not loaded")
    if name not in served:
        raise ApiError(404, "unknown_collection",
                       f"no collection {name!r}; this server has {', '.join(sorted(served))}")
    return served[name]


def facets_of(res: Resources, scan: int = FACET_SCAN, max_values: int = FACET_VALUES) -> Facets:
    """Count the scalar metadata values of the collection's first ``scan`` live items."""
    collection = res.settings.collection
    q = (select(Item.meta).where(Item.collection == collection, Item.deleted_at.is_(None))
         .order_by(Item.id).limit(scan + 1))
    with res.catalog.sessions() as session:
        metas = list(session.scalars(q))
    complete = len(metas) <= scan
    counts: dict[str, Counter] = defaultdict(Counter)  # key -> (type, value) -> items; True and 1 stay apart
    too_many: set[str] = set()
    for meta in metas[:scan]:
        for key, value in (meta or {}).items():
            if key in too_many or not isinstance(value, (str, int, float, bool)):
                continue
            counts[key][(type(value).__name__, value)] += 1
            if len(counts[key]) > max_values:
                too_many.add(key)
                del counts[key]
    facets = [Facet(key=key, values=[FacetValue(value=v, count=c) for (_, v), c in counter.most_common()])
              for key, counter in sorted(counts.items()) if len(counter) >= 2]
    return Facets(collection=collection, scanned=min(len(metas), scan), complete=complete, facets=facets)


def _file_name(path: str | None) -> str | None:
    """The training data's file name only: the run summary holds a path on the training machine."""
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if path else path


@router.get("/{name}/facets", response_model=Facets, summary="Metadata values to filter by")
async def facets(name: str, request: Request) -> Facets:
    """Metadata keys with at most a few dozen distinct values (e.g. vendor, category), each value with its
    count of live items: the choices of a filter (`{"vendor": "google"}`)."""
    return await run_in_threadpool(facets_of, _served(request, name))


def _recall_table(recall: dict[str, Any]) -> QualityTable | None:
    rows = [[name] + [None if r is None else r.get(str(k), r.get(k)) for k in (1, 5, 10)]
            for name in ("untrained", "trained") if (r := recall.get(name)) is not None]
    if not rows:
        return None
    return QualityTable(title=f"text→image recall on {recall.get('images', '?')} of its training images "
                              "(query = caption, hit = that image)", columns=["encoder", "R@1", "R@5", "R@10"],
                        rows=rows)


def _knn_table(knn: dict[str, Any]) -> QualityTable | None:
    rows = [[name, knn.get(name)] for name in ("untrained", "trained") if knn.get(name) is not None]
    if not rows:
        return None
    return QualityTable(title=f"k-NN (k={knn.get('k')}) accuracy on {knn.get('val_folder')}",
                        columns=["encoder", "accuracy"], rows=rows)


def about_encoder(name: str, res: Resources) -> EncoderAbout:
    """The served encoder, described from its file's header (kind, preprocessing, run summary)."""
    encoder = res.encoder
    meta = encoder.meta or {}
    run = meta.get("run") or {}
    config = run.get("config") or {}
    arch = meta.get("arch") or {}
    backbone = arch.get("backbone") or {}
    model = arch.get("model_name") or config.get("model") or (backbone.get("name") if isinstance(backbone, dict)
                                                              else backbone) or None
    loop = config.get("loop") or {}
    training = None
    if run:
        training = Training(
            method=run.get("method") or ("open_clip pretrained" if run.get("pretrained") else None),
            data=_file_name(run.get("data")), examples=run.get("pairs") or run.get("images"), model=model,
            steps=loop.get("steps"), batch_size=config.get("batch_size"), lr=loop.get("lr"),
            world_size=run.get("world_size"), train_seconds=run.get("train_seconds"),
            final_loss=run.get("final_loss"), finished=run.get("finished"), pretrained=run.get("pretrained"))
    tables = [_recall_table(run.get("text_to_image_recall") or {}), _knn_table(run.get("knn") or {})]
    return EncoderAbout(collection=name, kind=encoder.kind, fingerprint=encoder.fingerprint, dim=encoder.dim,
                        can_encode_text=encoder.can_encode_text, preprocess=meta.get("preprocess") or {},
                        training=training, quality=[t for t in tables if t is not None])


@router.get("/{name}/encoder", response_model=EncoderAbout, summary="How this collection's encoder was made")
async def encoder(name: str, request: Request) -> EncoderAbout:
    """The encoder's kind, fingerprint and preprocessing, how it was trained (method, data, steps) and the
    quality table its training run measured, all read from the encoder file."""
    return about_encoder(name, _served(request, name))
