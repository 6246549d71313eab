"""The catalog: which item each FAISS vector id stands for (SQLAlchemy 2, Alembic migrations).

SQLite is the embedded default; PostgreSQL is the deployed one. The vector id in
FAISS *is* the catalog's primary key, so the two never need a mapping table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint,
                        create_engine, delete, event, func, insert, select, update)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
# Rows read at a time when streaming vectors: as Python objects a row costs ~2 KB for 128-d
# vectors, so a chunk is ~30 MB (65,536 rows made a full build peak at 3x the raw vectors).
CHUNK = 16_384


class Base(DeclarativeBase):
    pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("collection", "source", name="uq_items_collection_source"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=None)


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
    metadata: dict[str, Any]


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL (readers never block the writer) and cross-thread use."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Catalog:
    """Reads and writes catalog rows; every write is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def upsert(self, collection: str, items: Sequence[NewItem]) -> list[int]:
        """Insert new sources, refresh changed ones; returns the ids in the order given."""
        with self.sessions.begin() as session:
            return upsert_in(session, collection, items)

    def get(self, item_id: int) -> Item | None:
        """The live item with this id (None if unknown or deleted)."""
        with self.sessions() as session:
            item = session.get(Item, item_id)
            return item if item is not None and item.deleted_at is None else None

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        """The live items among ``ids``, by id; unknown and deleted ids are absent."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self.sessions() as session:
            q = select(Item).where(Item.id.in_(ids), Item.deleted_at.is_(None))
            return {item.id: item for item in session.scalars(q)}

    def count(self, collection: str | None = None) -> int:
        """Live items (of ``collection``)."""
        with self.sessions() as session:
            q = select(func.count(Item.id)).where(Item.deleted_at.is_(None))
            if collection is not None:
                q = q.where(Item.collection == collection)
            return int(session.scalar(q))

    # -- vectors: what the indexer writes and publishes ------------------------------
    def embedded_hashes(self, collection: str, fingerprint: str) -> dict[str, str]:
        """source -> content hash of every live item whose vector by ``fingerprint`` is up to date."""
        q = (select(Item.source, Item.content_hash)
             .join(Vector, (Vector.item_id == Item.id) & (Vector.fingerprint == fingerprint))
             .where(Item.collection == collection, Item.deleted_at.is_(None),
                    Vector.content_hash == Item.content_hash))
        with self.sessions() as session:
            return {source: h for source, h in session.execute(q)}

    def write_batch(self, collection: str, fingerprint: str, items: Sequence[NewItem],
                    vectors: np.ndarray | None) -> list[int]:
        """Upsert ``items`` and, when given, their vectors (float32 (N, dim)), in one transaction:
        after a crash either all of a batch is there or none of it. Returns the items' ids."""
        with self.sessions.begin() as session:
            ids = upsert_in(session, collection, items)
            if vectors is not None:
                if len(vectors) != len(items):
                    raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
                session.execute(delete(Vector).where(Vector.item_id.in_(ids), Vector.fingerprint == fingerprint))
                rows = {i: {"item_id": i, "fingerprint": fingerprint, "content_hash": it.content_hash,
                            "vector": encode_vector(v)} for i, it, v in zip(ids, items, vectors)}  # last one wins
                session.execute(insert(Vector), list(rows.values()))
            return ids

    @staticmethod
    def _current_vectors(collection: str, fingerprint: str, *columns):
        """SELECT ``columns`` for every live item of ``collection`` whose vector by ``fingerprint`` is up to date."""
        return (select(*columns)
                .join(Item, Item.id == Vector.item_id)
                .where(Item.collection == collection, Item.deleted_at.is_(None), Vector.fingerprint == fingerprint,
                       Vector.content_hash == Item.content_hash)
                .order_by(Vector.item_id))

    def live_vectors(self, collection: str, fingerprint: str, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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

    def update_metadata(self, collection: str, item_id: int, changes: dict[str, Any]) -> Item | None:
        """Merge ``changes`` into a live item's metadata (a None value removes that key); None if no such item."""
        with self.sessions.begin() as session:
            item = session.get(Item, int(item_id))
            if item is None or item.deleted_at is not None or item.collection != collection:
                return None
            meta = dict(item.meta or {})
            for key, value in changes.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            item.meta = meta
            item.updated_at = _utcnow()
            return item

    def delete(self, collection: str, ids: Iterable[int]) -> list[int]:
        """Mark live items deleted (they vanish from get/get_many/count at once); returns those marked."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self.sessions.begin() as session:
            q = select(Item.id).where(Item.id.in_(ids), Item.collection == collection, Item.deleted_at.is_(None))
            found = list(session.scalars(q))
            if found:
                session.execute(update(Item).where(Item.id.in_(found)).values(deleted_at=_utcnow()))
            return found

    def dispose(self) -> None:
        self.engine.dispose()


def upsert_in(session: Session, collection: str, items: Sequence[NewItem]) -> list[int]:
    """``Catalog.upsert`` inside a caller's transaction.

    New sources go in as one multi-row INSERT ... RETURNING (SQLAlchemy's bulk insert; building and
    flushing an ORM object per row cost ~0.23 ms an item, a tenth of lookalike-tiny's forward pass on
    a 2-core CPU and more than a GPU's; the ids come back in no particular order, so they are
    matched by source);
    existing rows are updated through the ORM. A source given twice gets its last occurrence."""
    last = {it.source: it for it in items}
    existing = {
        row.source: row
        for row in session.scalars(select(Item).where(Item.collection == collection, Item.source.in_(list(last))))
    }
    for source, row in existing.items():
        it = last[source]
        if row.content_hash != it.content_hash or row.meta != it.metadata or row.deleted_at is not None:
            row.content_hash, row.meta, row.deleted_at = it.content_hash, it.metadata, None
    ids = {source: row.id for source, row in existing.items()}
    fresh = [it for source, it in last.items() if source not in existing]
    if fresh:
        inserted = session.execute(
            insert(Item).returning(Item.id, Item.source),  # matched back by source, in any order
            [{"collection": collection, "source": it.source, "content_hash": it.content_hash, "meta": it.metadata}
             for it in fresh])
        ids.update((source, item_id) for item_id, source in inserted)
    session.flush()
    return [ids[it.source] for it in items]


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
