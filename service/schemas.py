"""Request and response bodies of the HTTP API (pydantic models; they are also the OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from index.catalog import Item as CatalogItem

API_PREFIX = "/v1"

_EMOJI_META = {"vendor": "google", "code": "1f436", "name": "dog face", "category": "Animals & Nature"}
_HIT_EXAMPLE = {
    "id": 412, "score": 0.83, "source": "/data/emoji/google/1f436.png", "collection": "default",
    "metadata": _EMOJI_META, "image_url": "/v1/items/412/image",
}


FILTER_HELP = ("only items whose metadata match: {key: value} (equality), {key: [values]} (membership), "
               "{key: {gte|gt|lte|lt: number or ISO date, ne, in, nin}}; all conditions must hold")

# Item ids in requests: at most 2^53 - 1, the largest integer every JSON reader holds exactly (a float
# compares 2^63 - 1 and 2^63 + 191 as equal, so a schema could not state an int64 bound honestly).
ID_MAX = 2**53 - 1


def _a_json_integer(value: Any) -> Any:
    """What JSON Schema calls an integer: 3 or 3.0, never true/false or "3" (pydantic would take those)."""
    if isinstance(value, (bool, str, bytes)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_a_json_integer)]
# Lists longer than this are refused by the request models themselves, before their items are looked at;
# the limits that settings set (max_labels, the encoder's dim, ...) are below it and checked after.
LIST_CEILING = 65_536
LIMITS_KEY = "x-lookalike-limits"


def limit(**keywords: str) -> dict[str, Any]:
    """JSON-schema keywords whose values come from the settings (``limit(maximum="max_k")``), filled in
    by ``service.openapi`` from the same settings the routes enforce."""
    return {LIMITS_KEY: keywords}


NOT_BLANK = r"\S"  # what a query or label needs: one character that is not whitespace
LABEL = r"[^\s,]"  # ... that is not a comma either: a single labels field is split on commas
TEMPLATE = r"^(?:[^{}]|\{\{|\}\})*\{\}(?:[^{}]|\{\{|\}\})*$"  # one {} slot; other braces doubled

# 2x2 red pixels: the example image of the batch routes
TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGM8ISfHwMDAxMDAwMDAAAANBAEIfXHKZgAAAABJ"
            "RU5ErkJggg==")

# base64 image files in JSON bodies (a data: URL prefix is accepted too)
BASE64_IMAGE = {"format": "byte", "contentEncoding": "base64", "contentMediaType": "image/*",
                **limit(maxLength="max_base64_chars")}

_SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
_BOUND = {"anyOf": [{"type": "number"}, {"type": "string", "format": "date"},
                    {"type": "string", "format": "date-time"}]}


def _members() -> dict[str, Any]:
    from service.filters import MAX_MEMBERS

    return {"type": "array", "items": _SCALAR, "maxItems": MAX_MEMBERS}


def filter_json_schema() -> dict[str, Any]:
    """The filter language as JSON schema: what ``service.filters`` accepts."""
    from service.filters import MAX_KEYS

    condition = {"anyOf": [
        _SCALAR, _members(),
        {"type": "object", "minProperties": 1, "additionalProperties": False,
         "properties": {"eq": _SCALAR, "ne": _SCALAR, "in": _members(), "nin": _members(),
                        "gt": _BOUND, "gte": _BOUND, "lt": _BOUND, "lte": _BOUND}},
    ]}
    return {"anyOf": [{"type": "object", "maxProperties": MAX_KEYS, "additionalProperties": condition},
                      {"type": "null"}], "description": FILTER_HELP}


def filter_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a filter field: the filter language instead of a free-form object."""
    schema.clear()
    schema.update(filter_json_schema())


def item_image_path(item_id: int) -> str:
    """Where ``GET /v1/items/{id}/image`` serves an item's picture."""
    return f"{API_PREFIX}/items/{item_id}/image"


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)  # SQLite hands back naive UTC


class SearchPage(BaseModel):
    """What every search request shares: how many results, from where, and which items qualify."""

    model_config = ConfigDict(extra="forbid")

    k: JsonInt = Field(10, ge=1, description="how many results (at most the server's max_k, 100 by default)",
                   json_schema_extra=limit(maximum="max_k"))
    offset: JsonInt = Field(0, ge=0, description="skip this many results first (paging: offset=k gives page 2)",
                        json_schema_extra=limit(maximum="max_offset"))
    filter: dict[str, Any] | None = Field(None, description=FILTER_HELP, json_schema_extra=filter_schema)


class TextSearchRequest(SearchPage):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "dog face", "k": 5}]},
    )

    query: str = Field(description="what to look for, in words; surrounding whitespace is ignored",
                       json_schema_extra={"pattern": NOT_BLANK, **limit(maxLength="max_text_chars")})

    @field_validator("query")
    @classmethod
    def _not_empty(cls, query: str) -> str:
        query = query.strip()
        if not query:
            raise PydanticCustomError("empty_query", "the query is empty: give some words to search for")
        return query


class SimilarRequest(SearchPage):
    """More like this: the items nearest to an indexed item, the item itself left out."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": 412, "k": 5}]})

    id: JsonInt = Field(ge=0, le=ID_MAX, description="catalog id of an indexed item (as in search results)")


VECTOR = {"contains": {"not": {"const": 0}}, **limit(minItems="dim", maxItems="dim")}


class VectorSearchRequest(SearchPage):
    """Search with a vector computed elsewhere (by the same encoder); it is L2-normalised here."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"vector": [0.12, -0.05, 0.31], "k": 5}]})

    vector: list[float] = Field(min_length=1, max_length=LIST_CEILING, json_schema_extra=VECTOR,
                                description="as many numbers as the encoder's dim (see /healthz), not all zero")


def _exactly_one_property(schema: dict[str, Any]) -> None:
    """One of the properties, not null (the model allows null for "not given")."""
    schema.update(minProperties=1, maxProperties=1)
    for prop in schema["properties"].values():
        options = prop.pop("anyOf", None)
        if options:
            prop.update(next(o for o in options if o.get("type") != "null"))
        prop.pop("default", None)


class BatchQuery(BaseModel):
    """One query of a batch: exactly one of text, image (base64), id (more like this) or vector."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_property)

    text: str | None = Field(None, json_schema_extra={"pattern": NOT_BLANK, **limit(maxLength="max_text_chars")})
    image: str | None = Field(None, description="the image file's bytes, base64 (a data: URL works too)",
                              json_schema_extra=BASE64_IMAGE)
    id: JsonInt | None = Field(None, ge=0, le=ID_MAX, description="an indexed item: more like it, itself left out")
    vector: list[float] | None = Field(None, max_length=LIST_CEILING, json_schema_extra=VECTOR)

    @model_validator(mode="after")
    def _exactly_one(self) -> BatchQuery:
        given = [name for name in ("text", "image", "id", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError("one_query", "give exactly one of text, image, id or vector (got {given})",
                                      {"given": ", ".join(given) or "none"})
        if self.text is not None and not self.text.strip():
            raise PydanticCustomError("empty_query", "the query is empty: give some words to search for")
        return self


class BatchSearchRequest(SearchPage):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "queries": [{"text": "dog face"}, {"id": 412}], "k": 5, "filter": {"vendor": "google"}}]})

    queries: list[BatchQuery] = Field(min_length=1, max_length=LIST_CEILING,
                                      json_schema_extra=limit(maxItems="max_batch_queries"),
                                      description="answered in order, encoded together; k, offset and filter "
                                                  "apply to each")


Label = Annotated[str, Field(json_schema_extra={"pattern": LABEL, **limit(maxLength="max_text_chars")})]
Template = Annotated[str, Field(json_schema_extra={"pattern": TEMPLATE, **limit(maxLength="max_text_chars")})]


class BatchClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "images": [TINY_PNG], "labels": ["dog", "cat"]}]})

    images: list[Annotated[str, Field(json_schema_extra=BASE64_IMAGE)]] = Field(
        min_length=1, max_length=LIST_CEILING, json_schema_extra=limit(maxItems="max_batch_queries"),
        description="image files, base64")
    labels: list[Label] = Field(min_length=1, max_length=LIST_CEILING, json_schema_extra=limit(maxItems="max_labels"),
                                description="the candidate labels, shared by every image")
    templates: list[Template] | None = Field(None, max_length=LIST_CEILING,
                                             json_schema_extra=limit(maxItems="max_templates"),
                                             description="prompt templates with one {}; default: the server's")


class SearchHit(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_HIT_EXAMPLE]})

    id: int = Field(description="catalog id of the item (also its FAISS vector id)")
    score: float = Field(description="cosine similarity between the query and the item, higher is closer")
    source: str = Field(description="where the indexed image lives")
    collection: str
    metadata: dict[str, Any] = Field(description="the manifest columns the item was indexed with")
    image_url: str = Field(description="path of the item's picture on this server")

    @classmethod
    def of(cls, item: CatalogItem, score: float) -> SearchHit:
        return cls(id=item.id, score=float(score), source=item.public_source, collection=item.collection,
                   metadata=item.meta or {}, image_url=item_image_path(item.id))


class SearchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "results": [_HIT_EXAMPLE],
        "took_ms": 12.5, "index_version": "20261128T120000000000Z-3f2a",
    }]})

    results: list[SearchHit] = Field(description="best first")
    took_ms: float = Field(description="time spent on the server, in milliseconds")
    index_version: str = Field(description="the index version that answered")


class BatchSearchResponse(BaseModel):
    responses: list[SearchResponse] = Field(description="one per query, in order")


class LabelProbability(BaseModel):
    label: str
    probability: float = Field(ge=0.0, le=1.0)


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "labels": [{"label": "dog", "probability": 0.91}, {"label": "cat", "probability": 0.09}],
        "templates": ["a photo of a {}.", "{}"], "took_ms": 20.1,
    }]})

    labels: list[LabelProbability] = Field(description="every label given, most probable first; probabilities sum to 1")
    templates: list[str] = Field(description="the prompt templates each label was embedded with")
    took_ms: float


class BatchClassifyResponse(BaseModel):
    results: list[ClassifyResponse] = Field(description="one per image, in order")


class ItemOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 412, "source": "/data/emoji/google/1f436.png", "collection": "default",
        "content_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "metadata": _EMOJI_META, "created_at": "2026-11-28T12:00:00Z", "updated_at": "2026-11-28T12:00:00Z",
        "image_url": "/v1/items/412/image",
    }]})

    id: int
    source: str
    collection: str
    content_hash: str = Field(description="sha256 of the image file's bytes")
    metadata: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    image_url: str

    @classmethod
    def of(cls, item: CatalogItem) -> ItemOut:
        return cls(id=item.id, source=item.public_source, collection=item.collection, content_hash=item.content_hash,
                   metadata=item.meta or {}, created_at=_utc(item.created_at), updated_at=_utc(item.updated_at),
                   image_url=item_image_path(item.id))


class MetadataPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"metadata": {"album": "summer",
                                                                                           "draft": None}}]})

    metadata: dict[str, Any] = Field(description="keys to set; a null value removes the key")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ok", "index_version": "20261128T120000000000Z-3f2a", "count": 766,
        "encoder_fingerprint": "5d41402abc4b2a76b9719d911017c592…", "collection": "default", "can_encode_text": True,
    }]})

    status: str
    index_version: str
    count: int = Field(description="vectors in the index version")
    encoder_fingerprint: str
    collection: str
    can_encode_text: bool = Field(description="whether text search and zero-shot classification are available")


class CollectionInfo(BaseModel):
    name: str
    default: bool = Field(description="used when a request names no collection")
    encoder_kind: str = Field(description="clip, simclr, moco, rotnet")
    encoder_fingerprint: str
    dim: int
    can_encode_text: bool = Field(description="whether text search and zero-shot classification work here")
    index_version: str
    count: int = Field(description="vectors in the served index version")

    @classmethod
    def of(cls, name: str, res: Any, default: bool) -> CollectionInfo:
        version = res.version
        return cls(name=name, default=default, encoder_kind=res.encoder.kind,
                   encoder_fingerprint=res.encoder.fingerprint,
                   dim=res.encoder.dim, can_encode_text=res.encoder.can_encode_text, index_version=version.name,
                   count=version.count)


class Ready(BaseModel):
    status: str
    catalog_items: int = Field(description="items of the served collection in the catalog")


class ErrorBody(BaseModel):
    code: str = Field(description="stable snake_case code for programs")
    message: str = Field(description="a sentence for a person")
    detail: Any = Field(None, description="more about the error, e.g. the invalid fields of a 422")


class ErrorResponse(BaseModel):
    """The shape of every error response."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "error": {"code": "empty_query", "message": "body.query: the query is empty: give some words to search for",
                  "detail": [{"loc": ["body", "query"], "msg": "the query is empty: give some words to search for",
                              "type": "empty_query"}]},
    }]})

    error: ErrorBody


def upload_errors(**overrides: str) -> dict[int, dict]:
    """OpenAPI responses of a route that takes an image upload; ``overrides`` replace descriptions by status
    (``s400="..."``)."""
    descriptions = {
        400: "`bad_image`: empty or corrupt image",
        413: "`image_too_large`: too many bytes or pixels",
        415: "`unsupported_media_type` / `not_an_image`",
        422: "`validation_error`: bad or missing fields",
    }
    descriptions.update({int(k[1:]): v for k, v in overrides.items()})
    return {status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()}
