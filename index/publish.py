"""Publishing: the catalog's live vectors of a collection made into the current index version.

A ``Publisher`` works over a catalog, an index folder and an encoder. Usually it updates the current
version with what changed in the catalog (``index.update``); it builds (chooses, trains, tunes) a new
index when one of the rebuild rules (``index.rules``) says so, and records the reason as the new
version's ``built_because``. What it is asked for (factory or automatic choice, memory budget, target
recall, versions kept) is one ``IndexPolicy``, recorded in every version it publishes, so that a later
``republish`` (the service after uploads and deletes, ``python -m index delete|compact``) publishes as
the batch job last asked.

Publishers take turns under the index folder's lock (``index.version.publishing``): the batch job's main
rank, the service's publisher, ``python -m index delete|compact``. Every version's manifest counts a
``generation`` one past the version it replaced, so that readers can order versions without trusting
clocks. The service uses this module, never the batch job (``index.job``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.catalog import Catalog, redact
from index.choose import build_from
from index.manifest import Choice, EncoderRef, IndexPolicy, Manifest, Tuning, UpdateRecord
from index.rules import RULES, Rule, Situation, first_reason
from index.update import apply
from index.version import (
    IndexVersion,
    IndexVersionError,
    current_name,
    open_current,
    publish,
    publishing,
    read_manifest,
)
from training.encoder import Encoder

log = logging.getLogger(__name__)


@dataclass
class Publication:
    """What publishing did: ``built`` a new index, ``updated`` the current one, or left it (``unchanged``)."""

    path: Path  # the version now current
    action: str  # "built", "updated" or "unchanged"
    detail: str  # why it was built, or what the update added and removed
    rule: str | None = None  # the rebuild rule that called for a build


@dataclass(frozen=True)
class JobRecord:
    """What the batch job records about its run in the version it publishes (an update does not inherit it)."""

    source: str | None = None  # what it scanned
    failures: int | None = None  # files it skipped


class Publisher:
    """Publishes the index versions under ``out`` from the vectors ``encoder`` made, as ``catalog`` holds them."""

    def __init__(self, catalog: Catalog, out: Path, encoder: Encoder, rules: Sequence[Rule] = RULES) -> None:
        self.catalog, self.out, self.encoder, self.rules = catalog, Path(out), encoder, tuple(rules)

    def publish(self, collection: str, policy: IndexPolicy, *, job: JobRecord = JobRecord(),
                rebuild: bool = False) -> Publication:
        """Publish the live vectors of ``collection`` as the current version: by updating the current
        version with what changed in the catalog when no rebuild rule objects (``rebuild`` is one), else
        by building, choosing and tuning a new index from all of them."""
        with publishing(self.out):
            return self._publish(collection, policy, job, rebuild)

    def republish(self, *, rebuild: bool = False, keep: int | None = None) -> Publication:
        """Publish the catalog's live vectors again, with the current version's collection and policy
        (after deletes or uploads: an update of it; with ``rebuild``, or when a rule says so, a full build).
        ``keep``: versions kept, instead of the policy's.

        The current version is read under the publish lock, not taken from the caller: a service that
        still serves an older version publishes on top of the newest one, with the policy a newer batch
        run asked for, never over it. One built by another encoder is not replaced (IndexVersionError)."""
        with publishing(self.out):
            name = current_name(self.out)
            if name is None:
                raise IndexVersionError(f"no index version published under {self.out}")
            like = read_manifest(self.out / "versions" / name)
            if like.encoder.fingerprint != self.encoder.fingerprint:
                raise IndexVersionError(f"{name} was built by encoder {like.encoder.fingerprint[:16]}, not "
                                        f"{self.encoder.fingerprint[:16]}: publishing with it would replace a newer "
                                        "choice")
            policy = like.policy if keep is None else like.policy.model_copy(update={"keep": keep})
            return self._publish(like.collection, policy, JobRecord(source=like.source), rebuild)

    def rebuild(self, *, keep: int | None = None) -> Publication:
        """Compaction: the current version built again from the catalog, re-chosen and re-tuned for the
        present count, tombstones dropped."""
        return self.republish(rebuild=True, keep=keep)

    def delete(self, ids: list[int]) -> tuple[list[int], Publication]:
        """Delete items (hidden from the catalog at once) and publish a version without their vectors, with
        the current version's policy (an update of it, or a rebuild when the rules say so). Returns the ids
        deleted now (not those unknown or deleted before) and the publication."""
        current = open_current(self.out, mmap=True)  # for its manifest: publishing opens the version it updates
        current.check_encoder(self.encoder.fingerprint)
        deleted = self.catalog.delete(current.manifest.collection, ids, by="user")
        return deleted, self.republish()

    def _publish(self, collection: str, policy: IndexPolicy, job: JobRecord, rebuild: bool) -> Publication:
        started = time.perf_counter()
        # every version counts one past the one it replaces: readers order versions by it, never by clocks
        renewed = {"generation": generation(self.out) + 1, "policy": policy, "catalog": redact(self.catalog.url),
                   **{key: value for key, value in vars(job).items() if value is not None}}
        situation = Situation(collection, policy, self.encoder.fingerprint, _open_current(self.out),
                              lambda: self.catalog.live_keys(collection, self.encoder.fingerprint), rebuild)
        decided = first_reason(self.rules, situation)
        current = situation.current
        if decided is not None:
            rule, reason = decided
            log.info("building a new index for collection %r: %s", collection, reason)
            path = self._build(collection, policy, {**renewed, "built_because": reason})
            return Publication(path, "built", reason, rule.name)
        if current is None:
            raise IndexVersionError(f"no version under {self.out} to update: the rules must include no_current_version")
        change = situation.change
        if change.empty:
            return Publication(current.path, "unchanged", f"{current.name} matches the catalog")
        updated = apply(current, change, self.catalog)
        detail = f"+{updated.added} -{updated.removed} on {current.name}"
        record = UpdateRecord(base=current.name, added=updated.added, removed=updated.removed,
                              seconds=round(time.perf_counter() - started, 3))
        path = publish(self.out, updated.index, current.manifest.carried_over(**renewed, update=record),
                       keep=policy.keep, members=(updated.ids, updated.keys), tombstones=updated.tombstones)
        log.info("updated index version %s -> %s (%s)", current.name, path.name, detail)
        return Publication(path, "updated", detail)

    def _build(self, collection: str, policy: IndexPolicy, renewed: dict[str, Any]) -> Path:
        """Build a FAISS index from the live vectors of ``collection`` and publish it as the current version."""
        encoder = self.encoder
        source = CatalogSource(self.catalog, collection, encoder)
        nothing = f"collection {collection!r} has no items embedded by encoder {encoder.fingerprint[:16]}"
        if source.count == 0:
            raise ValueError(nothing)
        index, choice, tuning = build_from(source, policy.factory, policy.memory_budget, policy.target_recall)
        if index.ntotal == 0:  # all deleted between the count and the read
            raise ValueError(nothing)
        ids, keys = source.members()  # what the last pass over the catalog added, in the order added
        manifest = Manifest(
            encoder=EncoderRef(fingerprint=encoder.fingerprint, kind=encoder.kind, source=encoder.source),
            dim=encoder.dim, metric="inner_product", factory=choice.factory,
            choice=Choice(reason=choice.reason, estimated_bytes=choice.estimated_bytes,
                          memory_budget=policy.memory_budget if policy.auto else None, **choice.params),
            search_params=tuning["params"], tuning=Tuning(**tuning), tuned_count=int(index.ntotal),
            collection=collection, **renewed)
        # IDMap indexes store vectors in the order added; IVF lists have their own order (members any order)
        return publish(self.out, index, manifest, keep=policy.keep, members=(ids, keys))


def generation(out: Path) -> int:
    """The generation of the version ``out/CURRENT`` names (0: none yet, or one from before generations)."""
    name = current_name(out)
    if name is None:
        return 0
    try:
        return read_manifest(out / "versions" / name).generation
    except IndexVersionError:
        return 0


def _open_current(out: Path) -> IndexVersion | None:
    """The current version, opened for this publication alone (``apply`` changes it in place); None when
    there is none that can be read."""
    try:
        return open_current(out)
    except IndexVersionError:
        return None


class CatalogSource:
    """The live vectors of a collection as a build reads them (``index.choose.VectorSource``):
    streamed by id in chunks, never all in memory; ``take`` fetches a sample by position in a
    snapshot of the ids. Records the (id, content key) of every vector it streamed last: the
    version's member list."""

    def __init__(self, catalog: Catalog, collection: str, encoder: Encoder) -> None:
        self.catalog, self.collection = catalog, collection
        self.fingerprint, self.dim = encoder.fingerprint, encoder.dim
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
