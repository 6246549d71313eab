"""The batch indexing job: embed what is new or changed, keep vectors in the catalog, publish a version.

    reader (SourceItem) -> embed (decode in workers, encode in batches) -> writer (catalog rows and their
    vectors, one transaction per batch) -> publish (FAISS index from the catalog's live vectors)

Every batch commits its items together with their vectors, so a job killed at any moment
(even ``kill -9``) leaves only complete pairs behind; the next run hashes each file, skips
those whose vector the catalog already holds for this encoder, and goes on. The index
version is made from the catalog at the end, so it holds exactly one vector per live
item and always agrees with the catalog (``python -m index verify`` checks it): usually by
updating the current version with what changed since (``index.update``: adds, removals,
tombstones), and by building, choosing and tuning a new index when there is none yet, when
the collection has grown or shrunk past what the index was tuned for, or when tombstones
pile up (compaction): the rules of ``index.rules``. Nothing changed: no new version.

A job owns the items of its source (``source:<resolved path>``, see ``index.catalog``): it adds,
changes and, with ``delete_missing``, deletes only those. Uploads and other sources' items are left
alone, an item a person deleted stays deleted while its file keeps its bytes, and a person's
metadata edits outlive every run.

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

from tqdm.auto import tqdm

from core.distributed import barrier, init_from_env
from index.catalog import Catalog, NewItem
from index.decode import DEFAULT_MAX_PIXELS, DecodeLimits
from index.embed import embed_items
from index.faiss_build import new_index
from index.fetch import FetchLimits, is_url
from index.manifest import AUTO, DEFAULT_MEMORY_BUDGET, IndexPolicy
from index.publish import JobRecord, Publisher
from index.reader import read_source
from index.shards import is_shard_member, split_location
from index.source_item import SourceItem
from index.version import read_manifest
from training.encoder import Encoder, load_encoder

log = logging.getLogger(__name__)


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
    rebuild: bool = False  # build, choose and tune a new index even when an update of the current one would do
    fetch: FetchLimits = field(default_factory=FetchLimits)  # for http(s) sources
    device: str = "cpu"
    progress: bool = True

    @property
    def policy(self) -> IndexPolicy:
        """What the publisher is asked for."""
        return IndexPolicy(factory=self.factory, memory_budget=self.memory_budget, target_recall=self.target_recall,
                           keep=self.keep_versions)


@dataclass
class BuildReport:
    version: Path
    indexed: int  # vectors in the published version
    embedded: int = 0  # items embedded by this run (new or changed)
    unchanged: int = 0  # items whose vector was already in the catalog
    deleted: int = 0
    not_owned: int = 0  # files of the source that are another owner's items (uploads, other sources): left alone
    published: str = ""  # "built", "updated" or "unchanged" (see Publication)
    publish_detail: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rank: int = 0  # under torchrun: which process this report is from (only rank 0 publishes)
    world_size: int = 1

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def source_owner(source: str | Path) -> str:
    """The owner name of the items a job finds in ``source``: its resolved path."""
    return f"source:{Path(source).expanduser().resolve()}"


def file_root(base: Path, uri: str) -> str | None:
    """The folder an item's file must resolve under to be served, for a job whose source resolves to
    ``base``: the scanned folder; for a manifest its own folder, when the file is in it, else the file's
    folder; a shard's folder; None for URLs. Resolved now, so that a symlink swapped in later that leads
    out of it is seen for what it is."""
    if is_url(uri):
        return None
    path = split_location(uri)[0] if is_shard_member(uri) else Path(uri)
    real = path.resolve()
    if base.is_dir():
        return str(base)
    if real.is_relative_to(base.parent) and not is_shard_member(uri):
        return str(base.parent)
    return str(real.parent)


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
        owner, base = source_owner(cfg.source), Path(cfg.source).expanduser().resolve()
        foreign = catalog.foreign_sources(cfg.collection, owner)
        mine = [it for it in items[dist.rank::dist.world_size] if it.uri not in foreign]  # this rank's slice
        known = catalog.embedded_hashes(cfg.collection, encoder.fingerprint)
        report = BuildReport(version=Path(), indexed=0, rank=dist.rank, world_size=dist.world_size,
                             not_owned=len(items[dist.rank::dist.world_size]) - len(mine))
        bar = tqdm(total=len(mine), desc="index" if not dist.enabled else f"index (rank {dist.rank})", unit="img",
                   disable=not cfg.progress, dynamic_ncols=True, position=dist.rank)
        try:
            for batch in embed_items(encoder, mine, cfg.batch_size, cfg.workers, DecodeLimits(cfg.max_pixels), known,
                                     cfg.fetch):
                for item, reason in batch.failures:
                    log.warning("skipped %s: %s", item.uri, reason)
                    report.failures.append((item.uri, reason))
                if batch.unchanged:  # metadata may have changed; the vector has not
                    rows = [NewItem(it.uri, h, it.metadata, file_root(base, it.uri)) for it, h in batch.unchanged]
                    catalog.write_batch(cfg.collection, encoder.fingerprint, rows, None, owner)
                if batch.items:
                    rows = [NewItem(it.uri, h, it.metadata, file_root(base, it.uri))
                            for it, h in zip(batch.items, batch.content_hashes)]
                    catalog.write_batch(cfg.collection, encoder.fingerprint, rows, batch.vectors, owner)
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
        if cfg.delete_missing:  # only this source's own items, never an upload or another source's
            present = {it.uri for it in items}
            gone = [i for source, i in catalog.owned_sources(cfg.collection, owner).items() if source not in present]
            report.deleted = len(catalog.delete(cfg.collection, gone, by="source"))
        embed_seconds = time.perf_counter() - started
        job = JobRecord(source=str(cfg.source), failures=len(report.failures))
        published = Publisher(catalog, cfg.out, encoder).publish(cfg.collection, cfg.policy, job=job,
                                                                 rebuild=cfg.rebuild)
        report.version, report.published, report.publish_detail = published.path, published.action, published.detail
        report.indexed = read_manifest(report.version).count  # no need to load the index again
        report.seconds = embed_seconds
        return report
    finally:
        catalog.dispose()
