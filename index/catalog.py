"""The catalog: which item each FAISS vector id stands for (SQLAlchemy 2, Alembic migrations).

SQLite is the embedded default; PostgreSQL is the deployed one. The vector id in
FAISS *is* the catalog's primary key, so the two never need a mapping table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, Text, UniqueConstraint, create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("collection", "source", name="uq_items_collection_source"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)


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
        with self.sessions() as session:
            return session.get(Item, item_id)

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self.sessions() as session:
            return {item.id: item for item in session.scalars(select(Item).where(Item.id.in_(ids)))}

    def count(self, collection: str | None = None) -> int:
        with self.sessions() as session:
            q = select(func.count(Item.id))
            if collection is not None:
                q = q.where(Item.collection == collection)
            return int(session.scalar(q))

    def dispose(self) -> None:
        self.engine.dispose()


def upsert_in(session: Session, collection: str, items: Sequence[NewItem]) -> list[int]:
    """``Catalog.upsert`` inside a caller's transaction."""
    sources = [it.source for it in items]
    existing = {
        row.source: row
        for row in session.scalars(select(Item).where(Item.collection == collection, Item.source.in_(sources)))
    }
    rows = []
    for it in items:
        row = existing.get(it.source)
        if row is None:
            row = Item(collection=collection, source=it.source, content_hash=it.content_hash, meta=it.metadata)
            session.add(row)
            existing[it.source] = row
        elif row.content_hash != it.content_hash or row.meta != it.metadata:
            row.content_hash, row.meta = it.content_hash, it.metadata
        rows.append(row)
    session.flush()  # assigns ids
    return [row.id for row in rows]
