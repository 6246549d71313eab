"""Publishing: the catalog's live vectors of a collection made into the current index version.

Usually an update of the current version with what changed in the catalog (``index.update``), else a
full build (choose, train, tune) when there is none yet, when an update would not be as good, or when
asked. Publishers take turns under the index folder's lock (``index.version.publishing``): the batch
job's main rank, the service after uploads and deletes, ``python -m index delete|compact``. Every
version's manifest counts a ``generation`` one past the version it replaced, so that readers can order
versions without trusting clocks. The service uses this module, never ``index.build`` (the job).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from sqlalchemy.engine import make_url

from index.catalog import Catalog
from index.choose import build_from
from index.update import apply, diff, rebuild_reason
from index.version import (IndexVersion, IndexVersionError, current_name, open_current, publish, publishing,
                           read_manifest)
from training.encoder import Encoder

log = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_MEMORY_BUDGET = 4 * 2**30


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@dataclass
class Publication:
    """What publishing did: ``built`` a new index, ``updated`` the current one, or left it (``unchanged``)."""

    path: Path  # the version now current
    action: str  # "built", "updated" or "unchanged"
    detail: str  # why it was built, or what the update added and removed


def publish_collection(catalog: Catalog, out: Path, collection: str, encoder: Encoder, factory: str = AUTO,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET, target_recall: float = 0.95, keep: int = 5,
                       extra: dict[str, Any] | None = None, rebuild: bool = False) -> Publication:
    """Publish the live vectors of ``collection`` as the current version: by updating the current
    version with what changed in the catalog when that serves (``index.update``), else (or when
    ``rebuild``) by building, choosing and tuning a new index from all of them."""
    with publishing(out):
        return _publish_locked(catalog, out, collection, encoder, factory, memory_budget, target_recall, keep,
                               extra, rebuild)


def _publish_locked(catalog: Catalog, out: Path, collection: str, encoder: Encoder, factory: str,
                    memory_budget: int, target_recall: float, keep: int, extra: dict[str, Any] | None,
                    rebuild: bool) -> Publication:
    started = time.perf_counter()
    # every version counts one past the one it replaces: readers order versions by it, never by clocks
    extra = {**(extra or {}), "generation": generation(out) + 1}
    # opened for this update alone (the served version is another object): ``apply`` changes it in place
    current, reason = _updatable(out, collection, encoder, factory, memory_budget, target_recall)
    if rebuild:
        reason = "a rebuild was asked for"
    if reason is None:
        change = diff(current, *catalog.live_keys(collection, encoder.fingerprint))
        reason = rebuild_reason(current, change, memory_budget if factory == AUTO else None)
    if reason is None and change.empty:
        return Publication(current.path, "unchanged", f"{current.name} matches the catalog")
    if reason is not None:
        log.info("building a new index for collection %r: %s", collection, reason)
        return Publication(_build_version(catalog, out, collection, encoder, factory, memory_budget, target_recall,
                                          keep, {**extra, "built_because": reason}), "built", reason)
    updated = apply(current, change, catalog)
    detail = f"+{updated.added} -{updated.removed} on {current.name}"
    manifest = {key: value for key, value in current.manifest.items() if key not in REBUILT_ONLY}
    manifest.update({"catalog": redact(catalog.url), **extra,
                     "update": {"base": current.name, "added": updated.added, "removed": updated.removed,
                                "seconds": round(time.perf_counter() - started, 3)}})
    path = publish(out, updated.index, manifest, keep=keep, members=(updated.ids, updated.keys),
                   tombstones=updated.tombstones)
    log.info("updated index version %s -> %s (%s)", current.name, path.name, detail)
    return Publication(path, "updated", detail)


REBUILT_ONLY = ("update", "built_because", "source", "failures")  # what an update does not inherit


def generation(out: Path) -> int:
    """The generation of the version ``out/CURRENT`` names (0: none yet, or one from before generations)."""
    name = current_name(out)
    if name is None:
        return 0
    try:
        return int(read_manifest(out / "versions" / name).get("generation", 0))
    except IndexVersionError:
        return 0


def _updatable(out: Path, collection: str, encoder: Encoder, factory: str, memory_budget: int,
               target_recall: float) -> tuple[IndexVersion | None, str | None]:
    """The current version and None when an update of it can publish what was asked, else why not."""
    try:
        current = open_current(out)
    except IndexVersionError:
        return None, "no version published yet"
    manifest = current.manifest
    choice = manifest.get("choice", {})
    if current.fingerprint != encoder.fingerprint:
        return None, f"{current.name} was built by another encoder"
    if manifest.get("collection", "default") != collection:
        return None, f"{current.name} holds collection {manifest.get('collection')!r}"
    if current.members() is None:
        return None, f"{current.name} has no member list (written by an older lookalike)"
    if factory == AUTO and choice.get("memory_budget") != memory_budget:
        return None, f"{current.name} was chosen for another memory budget ({choice.get('memory_budget')})"
    if factory != AUTO and (choice.get("memory_budget") is not None or manifest["factory"] != factory):
        return None, f"{current.name} is {manifest['factory']}, {factory} was asked for"
    if manifest.get("tuning", {}).get("target", target_recall) != target_recall:
        return None, f"{current.name} was tuned for recall {manifest['tuning']['target']}"
    return current, None


class CatalogSource:
    """The live vectors of a collection as a build reads them (``index.choose.VectorSource``):
    streamed by id in chunks, never all in memory; ``take`` fetches a sample by position in a
    snapshot of the ids. Records the (id, content key) of every vector it streamed last: the
    version's member list."""

    def __init__(self, catalog: Catalog, collection: str, encoder: Encoder) -> None:
        self.catalog, self.collection, self.fingerprint, self.dim = catalog, collection, encoder.fingerprint, encoder.dim
        self.snapshot = catalog.live_vector_ids(collection, encoder.fingerprint)
        self.count = len(self.snapshot)
        self._ids: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self._ids, self._keys = [], []
        for ids, keys, vectors in self.catalog.live_entries(self.collection, self.fingerprint):
            self._check(vectors)
            self._ids.append(ids)
            self._keys.append(keys)
            yield ids, vectors

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.empty(len(positions), np.int64)
        vectors = np.empty((len(positions), self.dim), np.float32)  # the training sample: allocated once
        filled = 0
        for part_ids, _, part in self.catalog.entries_of(self.snapshot[positions].tolist(), self.fingerprint):
            self._check(part)
            ids[filled:filled + len(part)], vectors[filled:filled + len(part)] = part_ids, part
            filled += len(part)
        return ids[:filled], vectors[:filled]

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64),
                np.concatenate(self._keys) if self._keys else np.zeros(0, np.uint64))

    def _check(self, vectors: np.ndarray) -> None:
        if vectors.shape[1] != self.dim:
            raise ValueError(f"catalog vectors have dim {vectors.shape[1]}, the encoder {self.dim}")


def _build_version(catalog: Catalog, out: Path, collection: str, encoder: Encoder, factory: str,
                   memory_budget: int, target_recall: float, keep: int, extra: dict[str, Any]) -> Path:
    """Build a FAISS index from the live vectors of ``collection`` and publish it as the current version."""
    source = CatalogSource(catalog, collection, encoder)
    nothing = f"collection {collection!r} has no items embedded by encoder {encoder.fingerprint[:16]}"
    if source.count == 0:
        raise ValueError(nothing)
    index, choice, tuning = build_from(source, factory, memory_budget, target_recall)
    if index.ntotal == 0:  # all deleted between the count and the read
        raise ValueError(nothing)
    ids, keys = source.members()  # what the last pass over the catalog added, in the order added
    manifest = {
        "encoder": {"fingerprint": encoder.fingerprint, "kind": encoder.kind, "source": encoder.source},
        "dim": encoder.dim,
        "metric": "inner_product",
        "factory": choice.factory,
        "choice": {"reason": choice.reason, "estimated_bytes": choice.estimated_bytes,
                   "memory_budget": memory_budget if factory == AUTO else None, **choice.params},
        "search_params": tuning["params"],
        "tuning": tuning,
        "tuned_count": int(index.ntotal),
        "collection": collection,
        "catalog": redact(catalog.url),
        **extra,
    }
    # IDMap indexes store vectors in the order added; IVF lists have their own order (members any order)
    return publish(out, index, manifest, keep=keep, members=(ids, keys))


def republish(catalog: Catalog, out: Path, encoder: Encoder, keep: int = 5, rebuild: bool = False) -> Publication:
    """Publish the catalog's live vectors again, chosen and tuned as the current version was (after
    deletes or uploads: an update of it; with ``rebuild``, or when an update would not serve, a full
    build -- the compaction).

    The current version is read under the publish lock, not taken from the caller: a service that
    still serves an older version publishes on top of the newest one, with the index choice a newer
    batch run made, never over it. One built by another encoder is not replaced (IndexVersionError)."""
    with publishing(out):
        name = current_name(out)
        if name is None:
            raise IndexVersionError(f"no index version published under {out}")
        like = read_manifest(out / "versions" / name)
        if like["encoder"]["fingerprint"] != encoder.fingerprint:
            raise IndexVersionError(f"{name} was built by encoder {like['encoder']['fingerprint'][:16]}, not "
                                    f"{encoder.fingerprint[:16]}: publishing with it would replace a newer choice")
        choice = like.get("choice", {})
        factory = AUTO if choice.get("memory_budget") else like["factory"]
        target = like.get("tuning", {}).get("target", 0.95)
        extra = {k: like[k] for k in ("source",) if k in like}
        return _publish_locked(catalog, out, like.get("collection", "default"), encoder, factory,
                               choice.get("memory_budget") or DEFAULT_MEMORY_BUDGET, target, keep, extra, rebuild)
