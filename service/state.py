"""What the service loads once at start-up and shares between requests."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from index.catalog import Catalog, redact
from index.manifest import Manifest
from index.publish import Publisher
from index.update import diff
from index.version import EncoderMismatch, IndexVersion, current_name, open_current, open_version, read_manifest
from service.batching import Batcher
from service.fresh import FreshVectors
from service.settings import Settings
from training.encoder import Encoder, load_encoder

log = logging.getLogger(__name__)

LabelKey = tuple[tuple[str, ...], tuple[str, ...]]  # (labels, templates)


class StartupError(RuntimeError):
    """The service cannot start: a missing or unreadable artefact, or an encoder and index that disagree."""


class LabelWeightCache:
    """A small thread-safe LRU of zero-shot class weights (L, dim), keyed by (labels, templates)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[LabelKey, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: LabelKey, compute: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        weights = compute()  # outside the lock: two threads may both compute a new key; both get the same answer
        with self._lock:
            self._entries[key] = weights
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return weights

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Resources:
    """The encoder, the current index version and the catalog that one service instance answers from."""

    settings: Settings
    encoder: Encoder
    version: IndexVersion
    catalog: Catalog
    label_weights: LabelWeightCache = field(init=False)
    image_batcher: Batcher = field(init=False)  # PIL images -> (B, dim)
    text_batcher: Batcher | None = field(init=False)  # strings -> (B, dim); None for image-only encoders
    _refused: str | None = field(init=False, default=None)  # a published version that could not be served
    fresh: FreshVectors = field(init=False)  # uploads not yet in a published version
    unpublished: threading.Event = field(init=False)  # set by an upload, cleared by the publisher
    publisher: Publisher = field(init=False)  # publishes the catalog's changes as the current version's policy asks
    _swap: threading.Lock = field(init=False)  # one reload at a time (the watcher's and the publisher's)

    def __post_init__(self) -> None:
        self.fresh = FreshVectors(self.encoder.dim)
        self.unpublished = threading.Event()
        self.publisher = Publisher(self.catalog, Path(self.settings.index), self.encoder)
        self._swap = threading.Lock()
        self.label_weights = LabelWeightCache(self.settings.label_cache_size)
        self.image_batcher = Batcher(self.encoder.encode_images, self.settings.max_batch)
        self.text_batcher = None
        if self.encoder.can_encode_text:
            self.text_batcher = Batcher(self.encoder.encode_texts, self.settings.max_batch)

    @classmethod
    def load(cls, settings: Settings) -> Resources:
        """Load and cross-check everything; raises StartupError with a message a person can act on."""
        # IndexVersionError and a damaged manifest are ValueErrors; faiss reports unreadable files as RuntimeError
        try:
            version = open_current(settings.index)
        except (ValueError, OSError, RuntimeError) as exc:
            raise StartupError(f"cannot open the index at {settings.index}: {exc}") from exc
        try:
            encoder = load_encoder(settings.encoder, settings.device)
        except (ValueError, OSError, RuntimeError) as exc:  # EncoderError is a ValueError; so is an unknown model
            raise StartupError(f"cannot load the encoder {settings.encoder}: {exc}") from exc
        try:
            version.check_encoder(encoder.fingerprint)
        except EncoderMismatch as exc:
            raise StartupError(
                f"encoder/index mismatch: {exc} (index built by {version.fingerprint}, "
                f"configured encoder {settings.encoder} is {encoder.fingerprint})"
            ) from exc
        built_for = version.manifest.collection
        if built_for != settings.collection:
            raise StartupError(
                f"index version {version.name} holds collection {built_for!r}, "
                f"but the service is configured for collection {settings.collection!r}"
            )
        catalog = open_catalog(settings.database_url)
        try:
            items = catalog.count(settings.collection)
        except SQLAlchemyError as exc:
            catalog.dispose()
            raise StartupError(
                f"cannot read the catalog at {redact(settings.database_url)} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]}); was the index built with this database?"
            ) from exc
        if version.count and not items:
            catalog.dispose()
            raise StartupError(
                f"the catalog at {redact(settings.database_url)} has no items in collection "
                f"{settings.collection!r}, but index version {version.name} holds {version.count} vectors; "
                f"point --database-url at the catalog the index was built with "
                f"(it recorded {version.manifest.catalog or 'no catalog URL'})"
            )
        log.info("serving index version %s (%d vectors, collection %r) with encoder %s (%s)",
                 version.name, version.count, settings.collection, settings.encoder, encoder.fingerprint[:16])
        resources = cls(settings=settings, encoder=encoder, version=version, catalog=catalog)
        try:
            resources.catch_up()
        except SQLAlchemyError as exc:
            catalog.dispose()
            raise StartupError(f"cannot read the catalog's vectors at {redact(settings.database_url)}: {exc}") from exc
        return resources

    def catch_up(self) -> int:
        """Make the catalog's items that the served version lacks searchable now (uploads committed but
        not yet published when the last service stopped, a job that died before publishing), and have
        the publisher fold them in. Returns how many went into the fresh index."""
        collection, fingerprint = self.settings.collection, self.encoder.fingerprint
        live_ids, live_keys = self.catalog.live_keys(collection, fingerprint)
        if self.version.members() is not None:
            change = diff(self.version, live_ids, live_keys)
            add, pending = change.add, not change.empty
        else:  # a version from before member lists: ids alone
            add = np.setdiff1d(live_ids, self.version.ids())
            pending = bool(len(add)) or bool(len(np.setdiff1d(self.version.ids(), live_ids)))
        added = 0
        for ids, _, vectors in self.catalog.entries_of(add.tolist(), fingerprint):
            for item_id, vector in zip(ids.tolist(), vectors):
                self.fresh.add(item_id, vector)
            added += len(ids)
        if pending:
            log.info("%d catalog items are not in index version %s yet: searchable now, published next",
                     added, self.version.name)
            self.unpublished.set()
        return added

    def reload_if_published(self) -> bool:
        """Swap in the index version that ``CURRENT`` names if it is newer than the served one.

        Newer means a higher ``generation`` (each published version counts one past the one it
        replaced; the version name, a UTC time, decides between versions from before generations):
        a pointer that names an older version (a slow writer's, a restore from backup) is never
        followed back. The new version is loaded and checked (encoder fingerprint, collection) before
        the swap, one reload at a time; requests in flight keep the version object they started with.
        A version that cannot be served is logged once and the current one stays. Returns whether a
        swap happened."""
        with self._swap:
            name = current_name(self.settings.index)
            if name is None or name == self.version.name or name == self._refused:
                return False
            path = Path(self.settings.index) / "versions" / name
            try:
                manifest = read_manifest(path)
                if _order(manifest, name) < _order(self.version.manifest, self.version.name):
                    self._refused = name
                    log.error("not serving index version %s: it is older than the served %s", name,
                              self.version.name)
                    return False
                version = open_version(path)
                version.check_encoder(self.encoder.fingerprint)
                built_for = version.manifest.collection
                if built_for != self.settings.collection:
                    raise ValueError(f"it holds collection {built_for!r}, not {self.settings.collection!r}")
            except (ValueError, OSError, RuntimeError) as exc:
                self._refused = name
                log.error("not serving the newly published index version %s: %s", name, exc)
                return False
            old, self.version = self.version, version
            self.fresh.forget(version.ids())
        log.info("index version %s (%d vectors) replaces %s", version.name, version.count, old.name)
        return True

    @property
    def upload_dir(self) -> Path:
        return Path(self.settings.upload_dir)

    def publish_uploads(self) -> None:
        """Publish the catalog (uploads included) as a new index version and serve it."""
        published = self.publisher.republish()
        log.info("%s %s with the catalog's changes (%s)", published.action, published.path.name, published.detail)
        self.reload_if_published()

    def close(self) -> None:
        self.catalog.dispose()


def _order(manifest: Manifest, name: str) -> tuple[int, str]:
    """How index versions are ordered: by generation, then by name (a UTC time)."""
    return manifest.generation, name


def open_catalog(url: str) -> Catalog:
    """The catalog at ``url``; an SQLite file must already exist (a reader never creates an empty one)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StartupError(f"not a database URL: {url!r} ({exc})") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise StartupError(f"catalog database not found: {path} (build the index first, or pass --database-url)")
    try:
        return Catalog(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # unknown dialect, driver not installed
        raise StartupError(f"cannot open the catalog at {redact(url)}: {exc}") from exc
