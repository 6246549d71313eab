"""What a deployment configures: ``LOOKALIKE_*`` environment variables (or ``python -m service`` flags)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.catalog import default_database_url
from service.templates import DEFAULT_TEMPLATES, template_problem

MiB = 1024 * 1024


class CollectionSpec(BaseModel):
    """Another collection served beside the default one: its encoder and its index folder."""

    encoder: str
    index: Path


class Settings(BaseSettings):
    """Every knob of the service; ``Settings()`` reads them from ``LOOKALIKE_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_", extra="ignore")

    encoder: str = Field(
        description="encoder file, or open_clip:MODEL/TAG_OR_PATH; must be the one that built the index")
    index: Path = Field(description="index root folder (holds CURRENT and versions/)")
    database_url: str = Field("", description="SQLAlchemy URL of the catalog; default: SQLite beside the index folder")
    collection: str = "default"
    extra_collections: dict[str, CollectionSpec] = Field(
        default_factory=dict, description="more collections served side by side, each with its own encoder and "
                                          "index (same catalog database); requests pick one with ?collection=NAME")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: str = "cpu"
    log_level: str = "info"
    max_upload_bytes: PositiveInt = 20 * MiB
    max_image_pixels: PositiveInt = 64_000_000
    max_k: PositiveInt = 100
    max_labels: PositiveInt = 100
    request_timeout: float = Field(30.0, ge=0.0, description="seconds a request may take before a 503 "
                                                             "`timeout` (0: no limit)")
    max_batch_queries: PositiveInt = Field(32, description="queries (or images) in one batch request")
    max_text_chars: PositiveInt = Field(1000, description="characters in a query, a label or a template")
    max_templates: PositiveInt = Field(16, description="prompt templates in one classify request")
    max_offset: int = Field(10_000, ge=0, description="results a search may skip (paging stops there)")
    max_filter_chars: PositiveInt = Field(65_536, description="characters of a JSON text form field "
                                                             "(a filter, an item's metadata)")
    max_json_depth: PositiveInt = Field(32, description="nesting of arrays and objects in a JSON body or field")
    max_json_values: PositiveInt = Field(100_000, description="arrays, objects, strings and numbers in one JSON "
                                                             "body or field, all levels together")
    max_error_details: PositiveInt = Field(20, description="problems listed in one 422 (the count says how many "
                                                          "there were)")
    default_templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES), min_length=1)
    label_cache_size: PositiveInt = 64
    max_batch: PositiveInt = Field(32, description="most queries batched into one encoder call")
    require_key_for_reads: bool = Field(False, description="searches, classification and item reads need an API "
                                                           "key with the read scope (writes always need one)")
    rate_limit_per_minute: PositiveInt = Field(600, description="requests per minute per API key, unless the key "
                                                               "sets its own")
    anonymous_rate_limit_per_minute: int = Field(
        1200, ge=0, description="requests per minute per client address without a key (0: no limit)")
    max_concurrent_requests: int = Field(
        64, ge=0, description="requests worked on at once; past it, 503 `overloaded` with Retry-After at once "
                              "instead of a queue (0: no limit)")
    keep_alive_timeout: PositiveInt = Field(5, description="seconds an idle keep-alive connection stays open")
    header_timeout: float = Field(10.0, gt=0.0, description="seconds a client has to send a request's headers")
    max_connections: PositiveInt = Field(
        1024, description="open connections and requests in flight uvicorn takes before answering 503")
    upload_dir: Path | None = Field(None, description="where uploaded images are stored (default: 'uploads' "
                                                      "beside the index folder)")
    publish_delay: float = Field(2.0, ge=0.0, description="seconds after an upload before a new index version "
                                                          "is published (a burst of uploads makes one version)")
    reload_interval: float = Field(5.0, ge=0.0, description="seconds between checks for a newly published index "
                                                            "version, swapped in without a restart (0: never)")

    @field_validator("default_templates")
    @classmethod
    def _templates_have_a_slot(cls, templates: list[str]) -> list[str]:
        for t in templates:
            if problem := template_problem(t):
                raise ValueError(problem)
        return templates

    @model_validator(mode="after")
    def _collections_are_distinct(self) -> Settings:
        if self.collection in self.extra_collections:
            raise ValueError(f"collection {self.collection!r} is both the default and an extra collection")
        return self

    @model_validator(mode="after")
    def _defaults_beside_the_index(self) -> Settings:
        if not self.database_url:
            self.database_url = default_database_url(self.index)
        if self.upload_dir is None:
            self.upload_dir = Path(self.index).resolve().parent / "uploads"
        return self

    def for_collection(self, name: str) -> Settings:
        """These settings for one of ``extra_collections``."""
        spec = self.extra_collections[name]
        return self.model_copy(update={"collection": name, "encoder": spec.encoder, "index": spec.index,
                                       "extra_collections": {}})

    @property
    def max_request_bytes(self) -> int:
        """Whole request bodies: one upload plus room for the multipart framing and form fields."""
        return self.max_upload_bytes + MiB
