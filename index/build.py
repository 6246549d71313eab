"""``python -m index build``: embed a source, write catalog rows, publish an index version."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.engine import make_url
from tqdm.auto import tqdm

from index.catalog import Catalog, NewItem
from index.decode import DEFAULT_MAX_PIXELS, DecodeLimits
from index.embed import embed_items
from index.faiss_build import DEFAULT_FACTORY, fill, new_index
from index.reader import SourceItem, read_source
from index.version import publish
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
    factory: str = DEFAULT_FACTORY
    batch_size: int = 64
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_versions: int = 5
    device: str = "cpu"
    progress: bool = True


@dataclass
class BuildReport:
    version: Path
    indexed: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def build(cfg: BuildConfig, encoder: Encoder | None = None) -> BuildReport:
    """Embed every image of ``cfg.source``, upsert its catalog rows, publish a new index version."""
    started = time.perf_counter()
    encoder = encoder or load_encoder(cfg.encoder, cfg.device)
    catalog = Catalog(cfg.database_url)
    catalog.migrate()
    items: list[SourceItem] = list(read_source(cfg.source, cfg.image_key))
    if not items:
        raise ValueError(f"{cfg.source} holds no images")
    index = new_index(encoder.dim, cfg.factory)  # fail on a bad factory string before any work

    all_ids: list[np.ndarray] = []
    all_vecs: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=len(items), desc="index", unit="img", disable=not cfg.progress, dynamic_ncols=True)
    try:
        for batch in embed_items(encoder, items, cfg.batch_size, cfg.workers, DecodeLimits(cfg.max_pixels)):
            for item, reason in batch.failures:
                log.warning("skipped %s: %s", item.uri, reason)
                failures.append((item.uri, reason))
            if batch.items:
                rows = [NewItem(it.uri, h, it.metadata) for it, h in zip(batch.items, batch.content_hashes)]
                all_ids.append(np.asarray(catalog.upsert(cfg.collection, rows), dtype=np.int64))
                all_vecs.append(batch.vectors)
            bar.update(len(batch.items) + len(batch.failures))
            bar.set_postfix(failed=len(failures))
    finally:
        bar.close()
    if not all_ids:
        raise ValueError(f"none of the {len(items)} images in {cfg.source} could be decoded")

    ids = np.concatenate(all_ids)
    vectors = np.concatenate(all_vecs)
    fill(index, vectors, ids)
    manifest = {
        "encoder": {"fingerprint": encoder.fingerprint, "kind": encoder.kind, "source": encoder.source},
        "dim": encoder.dim,
        "metric": "inner_product",
        "factory": cfg.factory,
        "params": {},
        "collection": cfg.collection,
        "catalog": redact(cfg.database_url),
        "source": str(cfg.source),
        "failures": len(failures),
    }
    version = publish(cfg.out, index, manifest, keep=cfg.keep_versions)
    catalog.dispose()
    return BuildReport(version, int(index.ntotal), failures, time.perf_counter() - started)
