"""The catalog: which item each FAISS vector id stands for (SQLAlchemy 2, Alembic migrations).

SQLite is the embedded default; PostgreSQL is the deployed one. The vector id in
FAISS *is* the catalog's primary key, so the two never need a mapping table; ids are
never reused (SQLite AUTOINCREMENT, a PostgreSQL sequence), so an old vector never
names a new item.

Who owns an item, and what a person changed:

- ``owner`` is ``"upload"`` for an image added through the API, ``"source:<path>"`` for one a
  batch job found in that source (its resolved path), NULL for rows from before owners were
  kept (the first job that lists the file adopts it). A job adds, changes and deletes only what
  its source owns (or adopts); uploads and other sources' items are left alone.
- Metadata is kept in two parts: ``source_metadata`` (what the source or the upload gave) and
  ``user_metadata`` (PATCHes; a null value there records a removal). ``metadata`` is their merge,
  rewritten on every write of either, so every reader sees one dict. The person's edits win, key
  by key: a key they set keeps their value, a key they removed stays removed, whatever the source
  says later; keys nobody edited follow the source.
- ``deleted_by`` says who deleted an item: ``"user"`` (the API, ``python -m index delete``) or
  ``"source"`` (``--delete-missing``, its file was gone). An item a person deleted stays deleted
  when a job sees its file again with the same bytes; new bytes under its name are a new picture
  and bring it back (same id, the source's metadata, the old edits dropped). One the source
  deleted comes back, edits kept, when its file is back.
- ``revision`` counts every change of a row: the service's ETag, so a PATCH or DELETE with
  ``If-Match`` is a compare-and-set.

Writers never lose each other's work: every write is one transaction, and on SQLite it starts
with ``BEGIN IMMEDIATE`` (it waits for the write lock up front rather than failing to upgrade a
read snapshot later: "database is locked"), on PostgreSQL it locks the rows it reads to change
(``SELECT ... FOR UPDATE``); inserts that race on a source (two uploads of the same bytes) meet
in ``INSERT ... ON CONFLICT DO NOTHING``, and a transaction that still fails on a lock, a
deadlock or a serialisation conflict is retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
UPLOAD = "upload"  # the owner of items added through the API
SOURCES_PER_READ = 10_000  # sources looked up in one IN list
INSERT_ROWS = 2_000  # rows in one multi-row INSERT (9 values each: under SQLite's 32,766 parameters)
WRITE_ATTEMPTS = 8  # a write transaction that meets a lock, a deadlock or a serialisation failure is retried

MIGRATIONS = Path(__file__).with_name("migrations")
# Rows read at a time when streaming vectors, small enough that a full build's peak memory stays
# near the raw vectors': as Python objects a row takes ~2 KB for 128-d vectors, so a chunk is ~30 MB.
CHUNK = 16_384


def default_database_url(out: Path) -> str:
    """SQLite next to the index folder: ``INDEX_DIR/../catalog.db``."""
    return f"sqlite:///{(Path(out).resolve().parent / 'catalog.db')}"


def redact(url: str) -> str:
    """A database URL fit to print or record: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


class Base(DeclarativeBase):
    pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("collection", "source", name="uq_items_collection_source"),
                      Index("ix_items_collection_owner", "collection", "owner"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)  # source + user, merged
    source_meta: Mapped[dict[str, Any]] = mapped_column("source_metadata", JSON, default=dict)
    user_meta: Mapped[dict[str, Any]] = mapped_column("user_metadata", JSON, default=dict)
    owner: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    root: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)  # the file must resolve under it
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=None)
    deleted_by: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)  # "user" | "source"

    @property
    def public_source(self) -> str:
        """Where the item comes from, without the server's paths: a URL as it is, an upload by its
        stored name, a file relative to the root it was indexed under (else by its name)."""
        if "://" in self.source:
            return self.source
        if self.owner == UPLOAD:
            return f"upload/{Path(self.source).name}"
        if self.root:
            rel = Path(self.source).relative_to(self.root) if Path(self.source).is_relative_to(self.root) else None
            if rel is not None:
                return str(rel)
        return Path(self.source).name


ItemId = BigInteger().with_variant(Integer, "sqlite")


class Vector(Base):
    """An item's embedding by one encoder (``fingerprint``), computed from ``content_hash``'s bytes."""

    __tablename__ = "vectors"

    item_id: Mapped[int] = mapped_column(ItemId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKey(Base):
    """A key of the HTTP service (``python -m service keys``); only its sha256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart in lists
    scopes: Mapped[str] = mapped_column(String(200))  # comma-separated: read, write, admin
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # requests per minute; None: default
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=None)


@dataclass(frozen=True)
class NewItem:
    source: str
    content_hash: str
    metadata: dict[str, Any]  # the source's (or the upload's) metadata
    root: str | None = None  # the folder the file must resolve under when served (None: URLs, uploads)


class StaleRevision(Exception):
    """A conditional write (``If-Match``) found the item at another revision than the caller read."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"the item is at revision {revision}")
        self.revision = revision


def merge_metadata(source: dict[str, Any] | None, user: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata readers see: the source's, with the person's edits on top (a None edit removes)."""
    merged = dict(source or {})
    for key, value in (user or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL (readers never block the writer) and cross-thread use."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            conn.isolation_level = None  # pysqlite's own implicit BEGINs off: ``_begin`` below emits them
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")  # wait up to 30 s for another writer's lock
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # A writer takes the write lock when it begins, so it never reads a snapshot that another
            # commit makes stale before it writes (SQLite fails such an upgrade at once, not after a wait).
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def _retryable(exc: DBAPIError) -> bool:
    """A lock wait that timed out (SQLite), a deadlock or a serialisation failure (PostgreSQL)."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in ("40001", "40P01", "55P03"):
        return True
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


class Catalog:
    """Reads and writes catalog rows; every write is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.writers = sessionmaker(self.engine.execution_options(writer=True), expire_on_commit=False)

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest Alembic revision; idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def write(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one write transaction, retried (with a growing random pause) when it
        meets a lock timeout, a deadlock or a serialisation failure; ``work`` must be safe to re-run."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.writers.begin() as session:
                    return work(session)
            except DBAPIError as exc:
                if attempt == WRITE_ATTEMPTS - 1 or not _retryable(exc):
                    raise
                log.info("retrying a catalog write after %s", type(exc.orig).__name__)
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def upsert(self, collection: str, items: Sequence[NewItem], owner: str | None = None) -> list[int | None]:
        """Insert new sources, refresh changed ones (see ``upsert_in`` for what ``owner`` may change);
        returns the ids in the order given, None for items left alone."""
        return self.write(lambda session: upsert_in(session, collection, items, owner))

    def get(self, item_id: int) -> Item | None:
        """The live item with this id (None if unknown or deleted)."""
        with self.sessions() as session:
            item = session.get(Item, item_id)
            return item if item is not None and item.deleted_at is None else None

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        """The live items among ``ids``, by id; unknown and deleted ids are absent."""
        ids = [int(i) for i in ids]
        found: dict[int, Item] = {}
        with self.sessions() as session:
            for start in range(0, len(ids), SOURCES_PER_READ):  # bounded IN lists (PostgreSQL: 65,535 parameters)
                q = select(Item).where(Item.id.in_(ids[start:start + SOURCES_PER_READ]), Item.deleted_at.is_(None))
                found.update((item.id, item) for item in session.scalars(q))
        return found

    def count(self, collection: str | None = None) -> int:
        """Live items (of ``collection``)."""
        with self.sessions() as session:
            q = select(func.count(Item.id)).where(Item.deleted_at.is_(None))
            if collection is not None:
                q = q.where(Item.collection == collection)
            return int(session.scalar(q))

    # -- vectors: what the indexer writes and publishes ------------------------------
    def embedded_hashes(self, collection: str, fingerprint: str) -> dict[str, str]:
        """source -> content hash of every item whose vector by ``fingerprint`` is up to date: the live
        ones, and those a person deleted (the same bytes again leave them deleted: nothing to embed)."""
        q = (select(Item.source, Item.content_hash)
             .join(Vector, (Vector.item_id == Item.id) & (Vector.fingerprint == fingerprint))
             .where(Item.collection == collection, Item.deleted_at.is_(None) | (Item.deleted_by == "user"),
                    Vector.content_hash == Item.content_hash))
        with self.sessions() as session:
            return {source: h for source, h in session.execute(q)}

    def write_batch(self, collection: str, fingerprint: str, items: Sequence[NewItem],
                    vectors: np.ndarray | None, owner: str | None = None) -> list[int | None]:
        """Upsert ``items`` (as ``owner``, see ``upsert_in``) and, when given, their vectors (float32
        (N, dim)), in one transaction: after a crash either all of a batch is there or none of it.
        Returns the items' ids, None for those left alone (another's, or deleted by a person)."""
        if vectors is not None and len(vectors) != len(items):
            raise ValueError(f"{len(items)} items but {len(vectors)} vectors")

        def work(session: Session) -> list[int | None]:
            ids = upsert_in(session, collection, items, owner)
            if vectors is not None:
                _put_vectors(session, fingerprint, ids, items, vectors)
            return ids

        return self.write(work)

    def add_upload(self, collection: str, fingerprint: str, item: NewItem, vector: np.ndarray) -> tuple[int, bool]:
        """An image added through the API: a new item, or the same bytes again (the same source), whose
        metadata is then replaced (and which comes back if it was deleted). Returns (id, whether it is
        new or back). Uploads of the same bytes at once meet in the INSERT: one inserts, the others wait
        for it and update its row."""

        def work(session: Session) -> tuple[int, bool]:
            values = {"collection": collection, "source": item.source, "content_hash": item.content_hash,
                      "meta": item.metadata, "source_meta": item.metadata, "user_meta": {}, "owner": UPLOAD,
                      "root": item.root}
            inserted = session.execute(_insert_new(session, [values]).returning(Item.__table__.c.id)).scalar()
            created = inserted is not None
            if inserted is None:
                row = session.scalars(select(Item).where(Item.collection == collection, Item.source == item.source)
                                      .with_for_update()).one()
                created = row.deleted_at is not None
                _change(row, owner=UPLOAD, content_hash=item.content_hash, source_meta=item.metadata, user_meta={},
                        root=item.root, deleted_at=None, deleted_by=None)
                inserted = row.id
            _put_vectors(session, fingerprint, [inserted], [item], vector[None, :])
            return inserted, created

        return self.write(work)

    @staticmethod
    def _current_vectors(collection: str, fingerprint: str, *columns):
        """SELECT ``columns`` for every live item of ``collection`` whose vector by ``fingerprint`` is up to date."""
        return (select(*columns)
                .join(Item, Item.id == Vector.item_id)
                .where(Item.collection == collection, Item.deleted_at.is_(None), Vector.fingerprint == fingerprint,
                       Vector.content_hash == Item.content_hash)
                .order_by(Vector.item_id))

    def live_vectors(self, collection: str, fingerprint: str,
                     chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 (n,), vectors float32 (n, dim)) chunks of every live item's current vector, by id."""
        for ids, _, vectors in self.live_entries(collection, fingerprint, chunk):
            yield ids, vectors

    def live_vector_ids(self, collection: str, fingerprint: str) -> np.ndarray:
        """The ids (int64, sorted) ``live_vectors`` would yield now, without reading the vectors."""
        q = self._current_vectors(collection, fingerprint, Vector.item_id).execution_options(yield_per=CHUNK)
        with self.sessions() as session:
            return np.fromiter(session.scalars(q), dtype=np.int64)

    def live_entries(self, collection: str, fingerprint: str,
                     chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``live_vectors`` with each vector's content key (uint64, see ``content_key``), read in the same
        query, so a key always describes the vector it comes with.

        Each chunk is its own short read (the ids after the last chunk's), so a caller that takes
        minutes over every chunk (a FAISS build) holds no transaction open meanwhile: none for
        PostgreSQL's idle-in-transaction timeout to end, nothing to keep SQLite's WAL from
        checkpointing. Rows committed meanwhile are seen if their id is still ahead."""
        after = None
        while True:
            q = self._current_vectors(collection, fingerprint, Vector.item_id, Vector.content_hash, Vector.vector)
            if after is not None:
                q = q.where(Vector.item_id > after)
            with self.sessions() as session:
                rows = session.execute(q.limit(chunk)).all()
            if not rows:
                return
            after = rows[-1][0]
            yield _entries(rows)

    def entries_of(self, ids: Sequence[int], fingerprint: str,
                   chunk: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ids, keys, vectors) chunks of the current vectors of those ``ids`` that are live and have one
        (each chunk its own short read, as in ``live_entries``)."""
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), chunk):
            q = (select(Vector.item_id, Vector.content_hash, Vector.vector)
                 .join(Item, Item.id == Vector.item_id)
                 .where(Vector.item_id.in_(ids[start:start + chunk]), Vector.fingerprint == fingerprint,
                        Item.deleted_at.is_(None), Vector.content_hash == Item.content_hash)
                 .order_by(Vector.item_id))
            with self.sessions() as session:
                part = session.execute(q).all()
            if part:
                yield _entries(part)

    def live_keys(self, collection: str, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, content keys uint64), sorted by id, of every item ``live_vectors`` would yield;
        what an index update diffs its member list with (no vectors read)."""
        q = self._current_vectors(collection, fingerprint, Vector.item_id, Vector.content_hash)
        with self.sessions() as session:
            rows = session.execute(q).all()
        return (np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                np.fromiter((content_key(r[1]) for r in rows), dtype=np.uint64, count=len(rows)))

    def owned_sources(self, collection: str, owner: str) -> dict[str, int]:
        """source -> id of every live item of ``collection`` that ``owner`` owns."""
        with self.sessions() as session:
            q = select(Item.source, Item.id).where(Item.collection == collection, Item.owner == owner,
                                                   Item.deleted_at.is_(None))
            return {source: i for source, i in session.execute(q)}

    def foreign_sources(self, collection: str, owner: str) -> set[str]:
        """Sources of ``collection`` that belong to another owner than ``owner`` (uploads, other
        sources), deleted or not: a job for ``owner`` leaves them alone."""
        with self.sessions() as session:
            q = select(Item.source).where(Item.collection == collection, Item.owner.is_not(None),
                                          Item.owner != owner)
            return set(session.scalars(q))

    def find(self, collection: str, source: str) -> Item | None:
        """The live item of ``collection`` with this source, if any."""
        with self.sessions() as session:
            q = select(Item).where(Item.collection == collection, Item.source == source, Item.deleted_at.is_(None))
            return session.scalar(q)

    def vector_of(self, item_id: int, fingerprint: str) -> np.ndarray | None:
        """A live item's current vector by ``fingerprint`` (None if it has none or it is out of date)."""
        q = (select(Vector.vector)
             .join(Item, Item.id == Vector.item_id)
             .where(Vector.item_id == int(item_id), Vector.fingerprint == fingerprint, Item.deleted_at.is_(None),
                    Vector.content_hash == Item.content_hash))
        with self.sessions() as session:
            data = session.scalar(q)
        return decode_vector(data) if data is not None else None

    def live_ids(self, collection: str) -> set[int]:
        with self.sessions() as session:
            q = select(Item.id).where(Item.collection == collection, Item.deleted_at.is_(None))
            return set(session.scalars(q))

    def sources(self, collection: str) -> dict[str, int]:
        """source -> id of every live item of ``collection``."""
        with self.sessions() as session:
            q = select(Item.source, Item.id).where(Item.collection == collection, Item.deleted_at.is_(None))
            return {source: i for source, i in session.execute(q)}

    def update_metadata(self, collection: str, item_id: int, changes: dict[str, Any],
                        revision: int | None = None) -> Item | None:
        """A person's edit: ``changes`` go into the item's user metadata (a None value removes that key,
        also from what the source gives later); None if no such live item. With ``revision``, only if the
        item is still at that revision (else ``StaleRevision``). The row is locked while it is changed,
        so concurrent edits of one item all land."""

        def work(session: Session) -> Item | None:
            item = session.scalars(select(Item).where(Item.id == int(item_id)).with_for_update()).one_or_none()
            if item is None or item.deleted_at is not None or item.collection != collection:
                return None
            if revision is not None and item.revision != revision:
                raise StaleRevision(item.revision)
            _change(item, user_meta={**(item.user_meta or {}), **changes})
            return item

        return self.write(work)

    def delete(self, collection: str, ids: Iterable[int], by: str = "user", revision: int | None = None) -> list[int]:
        """Mark live items deleted (they vanish from get/get_many/count at once) ``by`` a person ("user")
        or their source ("source", see the module's docstring); returns those marked, in the order given. With
        ``revision`` (one id), only if the item is still at that revision (else ``StaleRevision``)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []

        def work(session: Session) -> list[int]:
            found = []
            for start in range(0, len(ids), SOURCES_PER_READ):  # bounded IN lists
                q = (select(Item).where(Item.id.in_(ids[start:start + SOURCES_PER_READ]), Item.collection == collection,
                                        Item.deleted_at.is_(None))
                     .order_by(Item.id).with_for_update())
                found += session.scalars(q)
            for item in found:
                if revision is not None and item.revision != revision:
                    raise StaleRevision(item.revision)
                _change(item, deleted_at=_utcnow(), deleted_by=by)
            marked = {item.id for item in found}
            return [i for i in dict.fromkeys(ids) if i in marked]  # in the order given (locked by id)

        return self.write(work)

    def dispose(self) -> None:
        self.engine.dispose()


def upsert_in(session: Session, collection: str, items: Sequence[NewItem],
              owner: str | None = None) -> list[int | None]:
    """``Catalog.upsert`` inside a caller's transaction, as the batch job for ``owner`` writes.

    New sources go in as one multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING (SQLAlchemy's bulk
    insert: an ORM object built and flushed per row costs more per item than a GPU's forward pass;
    the ids come back in no particular order, so they are matched by source); a source that another
    writer inserted meanwhile is then treated as existing. Existing rows are locked and updated
    through the ORM, and only when ``owner`` may: its own rows and unowned ones (which it adopts),
    never another owner's, and not one a person deleted unless its bytes changed (see the module's
    docstring). Those get None. A source given twice gets its last occurrence."""
    if len(items) > SOURCES_PER_READ:  # bounded IN lists (PostgreSQL takes at most 65,535 parameters)
        return [i for start in range(0, len(items), SOURCES_PER_READ)
                for i in upsert_in(session, collection, items[start:start + SOURCES_PER_READ], owner)]
    last = {it.source: it for it in items}
    ids: dict[str, int | None] = {}
    for _ in range(2):  # the second round: rows another writer inserted between our read and our insert
        todo = [source for source in last if source not in ids]
        if not todo:
            break
        q = (select(Item).where(Item.collection == collection, Item.source.in_(todo))
             .order_by(Item.id).with_for_update())
        for row in session.scalars(q):
            ids[row.source] = _refresh(row, last[row.source], owner)
        fresh = [last[source] for source in todo if source not in ids]
        if fresh:
            values = [{"collection": collection, "source": it.source, "content_hash": it.content_hash,
                       "meta": it.metadata, "source_meta": it.metadata, "user_meta": {}, "owner": owner,
                       "root": it.root} for it in fresh]
            for start in range(0, len(values), INSERT_ROWS):
                part = _insert_new(session, values[start:start + INSERT_ROWS])
                inserted = session.execute(part.returning(Item.__table__.c.id, Item.__table__.c.source))
                ids.update((source, item_id) for item_id, source in inserted)
    session.flush()
    return [ids[it.source] for it in items]


def _refresh(row: Item, it: NewItem, owner: str | None) -> int | None:
    """What a job for ``owner`` does to an existing row for ``it``: its id, or None when it leaves it."""
    if row.owner is not None and row.owner != owner:
        return None  # an upload, or another source's item
    if row.deleted_by == "user" and row.content_hash == it.content_hash:
        return None  # a person deleted it, and these are the bytes they deleted
    changes: dict[str, Any] = {"owner": owner if row.owner is None else row.owner, "content_hash": it.content_hash,
                               "source_meta": it.metadata, "root": it.root}
    if row.deleted_at is not None:
        changes.update(deleted_at=None, deleted_by=None)
        if row.deleted_by == "user":  # new bytes under a deleted item's name: a new picture
            changes["user_meta"] = {}
    _change(row, **changes)
    return row.id


def _change(row: Item, **values: Any) -> None:
    """Set ``values`` on ``row``; when any differs, recompute the merged metadata and bump the revision."""
    changed = {k: v for k, v in values.items() if getattr(row, k) != v}
    if not changed:
        return
    for key, value in changed.items():
        setattr(row, key, value)
    row.meta = merge_metadata(row.source_meta, row.user_meta)
    row.revision = (row.revision or 0) + 1
    row.updated_at = _utcnow()


def _insert_new(session: Session, values: list[dict[str, Any]]):
    """INSERT of new items that skips (returns nothing for) sources another transaction inserted first."""
    rows = [{_COLUMN_OF[k]: v for k, v in row.items()} for row in values]
    dialect = session.get_bind().dialect.name
    module = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        raise ValueError(f"the catalog supports SQLite and PostgreSQL, not {dialect}")
    return module.insert(Item.__table__).values(rows).on_conflict_do_nothing(index_elements=["collection", "source"])


_COLUMN_OF = {"collection": "collection", "source": "source", "content_hash": "content_hash", "meta": "metadata",
              "source_meta": "source_metadata", "user_meta": "user_metadata", "owner": "owner", "root": "root"}


def _put_vectors(session: Session, fingerprint: str, ids: Sequence[int | None], items: Sequence[NewItem],
                 vectors: np.ndarray) -> None:
    """Replace the vectors by ``fingerprint`` of the items written (None ids: left alone, no vector)."""
    rows = {i: {"item_id": i, "fingerprint": fingerprint, "content_hash": it.content_hash,
                "vector": encode_vector(v)} for i, it, v in zip(ids, items, vectors) if i is not None}  # last wins
    if not rows:
        return
    written = list(rows)
    for start in range(0, len(written), SOURCES_PER_READ):
        session.execute(delete(Vector).where(Vector.item_id.in_(written[start:start + SOURCES_PER_READ]),
                                             Vector.fingerprint == fingerprint))
    session.execute(insert(Vector), list(rows.values()))


def content_key(content_hash: str) -> int:
    """A 64-bit digest of a content hash: enough to tell an item's old bytes from its new ones."""
    return int.from_bytes(hashlib.blake2b(content_hash.encode(), digest_size=8).digest(), "little")


def _entries(rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item_id, content_hash, vector bytes) rows -> (ids, keys, vectors)."""
    sizes = {len(r[2]) for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"stored vectors of different sizes ({sorted(sizes)} bytes) under one encoder fingerprint")
    vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), -1)
    return (np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            np.fromiter((content_key(r[1]) for r in rows), dtype=np.uint64, count=len(rows)),
            vectors.astype(np.float32))  # a writable native-order copy


def encode_vector(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def decode_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)
