"""The batch indexing job: embed what is new or changed, keep vectors in the catalog, publish a version.

    reader (SourceItem) -> embed (decode in workers, encode in batches) -> writer (catalog rows and their
    vectors, one transaction per batch) -> publish (FAISS index from the catalog's live vectors)

Every batch commits its items together with their vectors, so a job killed at any moment
(even ``kill -9``) leaves only complete pairs behind; the next run hashes each file, skips
those whose vector the catalog already holds for this encoder, and goes on. The index
version is built from the catalog at the end, so it holds exactly one vector per live
item and always agrees with the catalog (``python -m index verify`` checks it).

Under ``torchrun`` (one process per GPU, on one or several machines sharing the catalog
database and the index folder), rank r embeds every world_size-th image starting at r;
the catalog is where the slices meet, and rank 0 publishes the version once all ranks
have committed (a barrier).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import make_url
from tqdm.auto import tqdm

from index.catalog import Catalog, NewItem
from index.choose import build_tuned
from index.decode import DEFAULT_MAX_PIXELS, DecodeLimits
from index.embed import embed_items
from index.fetch import FetchLimits
from index.faiss_build import new_index
from index.reader import SourceItem, read_source
from index.version import IndexVersion, open_current, publish, read_manifest
from training.distributed import barrier, init_from_env
from training.encoder import Encoder, load_encoder

log = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_MEMORY_BUDGET = 4 * 2**30


@dataclass
class BuildConfig:
    encoder: str
    source: Path
    out: Path
    database_url: str
    collection: str = "default"
    image_key: str = "file"
    factory: str = AUTO  # "auto" (choose_index) or a FAISS factory string
    memory_budget: int = DEFAULT_MEMORY_BUDGET  # bytes the index may take (for "auto")
    target_recall: float = 0.95  # recall@10 the search parameters are tuned for
    batch_size: int = 64
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_versions: int = 5
    delete_missing: bool = False  # items of the collection no longer in the source are deleted
    fetch: FetchLimits = field(default_factory=FetchLimits)  # for http(s) sources
    device: str = "cpu"
    progress: bool = True


@dataclass
class BuildReport:
    version: Path
    indexed: int  # vectors in the published version
    embedded: int = 0  # items embedded by this run (new or changed)
    unchanged: int = 0  # items whose vector was already in the catalog
    deleted: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rank: int = 0  # under torchrun: which process this report is from (only rank 0 publishes)
    world_size: int = 1

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def build(cfg: BuildConfig, encoder: Encoder | None = None) -> BuildReport:
    """Embed the new and changed images of ``cfg.source`` into the catalog, then publish a version."""
    started = time.perf_counter()
    if cfg.factory != AUTO:
        new_index(8, cfg.factory)  # a bad factory string fails before any work
    dist, device = init_from_env(cfg.device)  # under torchrun: this process's share and GPU
    encoder = encoder or load_encoder(cfg.encoder, device)
    catalog = Catalog(cfg.database_url)
    try:
        if dist.is_main:
            catalog.migrate()
        barrier(dist)
        items: list[SourceItem] = list(read_source(cfg.source, cfg.image_key))
        if not items:
            raise ValueError(f"{cfg.source} holds no images")
        mine = items[dist.rank::dist.world_size]  # every rank embeds its slice into the shared catalog
        known = catalog.embedded_hashes(cfg.collection, encoder.fingerprint)
        report = BuildReport(version=Path(), indexed=0, rank=dist.rank, world_size=dist.world_size)
        bar = tqdm(total=len(mine), desc="index" if not dist.enabled else f"index (rank {dist.rank})", unit="img",
                   disable=not cfg.progress, dynamic_ncols=True, position=dist.rank)
        try:
            for batch in embed_items(encoder, mine, cfg.batch_size, cfg.workers, DecodeLimits(cfg.max_pixels), known,
                                     cfg.fetch):
                for item, reason in batch.failures:
                    log.warning("skipped %s: %s", item.uri, reason)
                    report.failures.append((item.uri, reason))
                if batch.unchanged:  # metadata may have changed; the vector has not
                    catalog.write_batch(cfg.collection, encoder.fingerprint,
                                        [NewItem(it.uri, h, it.metadata) for it, h in batch.unchanged], None)
                if batch.items:
                    rows = [NewItem(it.uri, h, it.metadata) for it, h in zip(batch.items, batch.content_hashes)]
                    catalog.write_batch(cfg.collection, encoder.fingerprint, rows, batch.vectors)
                report.embedded += len(batch.items)
                report.unchanged += len(batch.unchanged)
                bar.update(len(batch.items) + len(batch.failures) + len(batch.unchanged))
                bar.set_postfix(new=report.embedded, same=report.unchanged, failed=len(report.failures))
        finally:
            bar.close()
        barrier(dist)  # every slice is committed: the main rank merges them into one version
        if not dist.is_main:
            report.seconds = time.perf_counter() - started
            return report
        if cfg.delete_missing:
            present = {it.uri for it in items}
            gone = [i for source, i in catalog.sources(cfg.collection).items() if source not in present]
            report.deleted = len(catalog.delete(cfg.collection, gone))
        embed_seconds = time.perf_counter() - started
        extra = {"source": str(cfg.source), "failures": len(report.failures)}
        report.version = publish_collection(catalog, cfg.out, cfg.collection, encoder, cfg.factory,
                                            cfg.memory_budget, cfg.target_recall, cfg.keep_versions, extra)
        report.indexed = int(read_manifest(report.version)["count"])  # no need to load the index again
        report.seconds = embed_seconds
        return report
    finally:
        catalog.dispose()


def publish_collection(catalog: Catalog, out: Path, collection: str, encoder: Encoder, factory: str = AUTO,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET, target_recall: float = 0.95, keep: int = 5,
                       extra: dict[str, Any] | None = None) -> Path:
    """Build a FAISS index from the live vectors of ``collection`` and publish it as the current version."""
    parts = list(catalog.live_vectors(collection, encoder.fingerprint))
    if not parts:
        raise ValueError(f"collection {collection!r} has no items embedded by encoder {encoder.fingerprint[:16]}")
    ids = np.concatenate([p[0] for p in parts])
    vectors = np.concatenate([p[1] for p in parts])
    if vectors.shape[1] != encoder.dim:
        raise ValueError(f"catalog vectors have dim {vectors.shape[1]}, the encoder {encoder.dim}")
    index, choice, tuning = build_tuned(vectors, ids, factory, memory_budget, target_recall)
    manifest = {
        "encoder": {"fingerprint": encoder.fingerprint, "kind": encoder.kind, "source": encoder.source},
        "dim": encoder.dim,
        "metric": "inner_product",
        "factory": choice.factory,
        "choice": {"reason": choice.reason, "estimated_bytes": choice.estimated_bytes,
                   "memory_budget": memory_budget if factory == AUTO else None, **choice.params},
        "search_params": tuning["params"],
        "tuning": tuning,
        "collection": collection,
        "catalog": redact(catalog.url),
        **(extra or {}),
    }
    return publish(out, index, manifest, keep=keep)


@dataclass
class VerifyReport:
    version: str
    collection: str
    index_count: int
    catalog_count: int
    missing_from_index: list[int]  # live catalog items with a vector but no place in the index
    not_in_catalog: list[int]  # index ids that are deleted or unknown in the catalog
    duplicates: int  # ids stored more than once in the index

    @property
    def ok(self) -> bool:
        return not (self.missing_from_index or self.not_in_catalog or self.duplicates)


def verify(out: Path, database_url: str) -> VerifyReport:
    """Compare the current index version with the catalog it was built from."""
    version = open_current(out)
    collection = version.manifest.get("collection", "default")
    catalog = Catalog(database_url)
    try:
        stored = version.ids()
        expected = catalog.live_vector_ids(collection, version.fingerprint)
        in_index = set(stored.tolist())
        return VerifyReport(
            version=version.name, collection=collection, index_count=len(stored), catalog_count=len(expected),
            missing_from_index=sorted(expected - in_index), not_in_catalog=sorted(in_index - expected),
            duplicates=len(stored) - len(in_index),
        )
    finally:
        catalog.dispose()


def delete_items(out: Path, database_url: str, ids: list[int], encoder: Encoder, keep: int = 5) -> tuple[list[int], Path]:
    """Delete items (hidden from the catalog at once) and publish a version without their vectors,
    with the current version's index choice."""
    current = open_current(out)
    current.check_encoder(encoder.fingerprint)
    catalog = Catalog(database_url)
    try:
        deleted = catalog.delete(current.manifest.get("collection", "default"), ids)
        return deleted, republish(catalog, out, encoder, current, keep)
    finally:
        catalog.dispose()


def republish(catalog: Catalog, out: Path, encoder: Encoder, like: IndexVersion, keep: int = 5) -> Path:
    """Publish the catalog's live vectors again, chosen and tuned as ``like`` was (after deletes or uploads)."""
    choice = like.manifest.get("choice", {})
    factory = AUTO if choice.get("memory_budget") else like.manifest["factory"]
    target = like.manifest.get("tuning", {}).get("target", 0.95)
    extra = {k: like.manifest[k] for k in ("source",) if k in like.manifest}
    return publish_collection(catalog, out, like.manifest.get("collection", "default"), encoder, factory,
                              choice.get("memory_budget") or DEFAULT_MEMORY_BUDGET, target, keep, extra)
