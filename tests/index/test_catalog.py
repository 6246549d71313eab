import pytest
from sqlalchemy import inspect

from index.catalog import Catalog, NewItem


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    cat = Catalog(url)
    cat.migrate()
    yield cat
    if request.param == "postgresql":
        with cat.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS items, alembic_version")
    cat.dispose()


def test_migrations_create_the_schema_and_are_idempotent(catalog):
    catalog.migrate()
    insp = inspect(catalog.engine)
    assert {"items", "alembic_version"} <= set(insp.get_table_names())
    cols = {c["name"] for c in insp.get_columns("items")}
    assert cols == {"id", "collection", "source", "content_hash", "metadata", "created_at", "updated_at"}


def test_upsert_assigns_stable_ids(catalog):
    a, b = NewItem("/x/a.png", "h1", {"name": "a"}), NewItem("/x/b.png", "h2", {"name": "b", "n": 2})
    ids = catalog.upsert("default", [a, b])
    assert len(set(ids)) == 2
    assert catalog.upsert("default", [b, a]) == ids[::-1]
    changed = catalog.upsert("default", [NewItem("/x/a.png", "h9", {"name": "a2"})])
    assert changed == ids[:1]
    row = catalog.get(ids[0])
    assert (row.content_hash, row.meta) == ("h9", {"name": "a2"})
    assert row.updated_at >= row.created_at
    assert catalog.count("default") == 2


def test_collections_are_separate(catalog):
    [x] = catalog.upsert("one", [NewItem("/a.png", "h", {})])
    [y] = catalog.upsert("two", [NewItem("/a.png", "h", {})])
    assert x != y and catalog.count("one") == catalog.count("two") == 1


def test_get_many_and_unknown_ids(catalog):
    ids = catalog.upsert("default", [NewItem(f"/p/{i}.png", f"h{i}", {"i": i}) for i in range(5)])
    rows = catalog.get_many(ids[1:3] + [10**9])
    assert sorted(rows) == sorted(ids[1:3])
    assert rows[ids[2]].meta == {"i": 2}
    assert catalog.get(10**9) is None
    assert catalog.get_many([]) == {}


def test_unicode_and_nested_metadata_survive(catalog):
    meta = {"name": "café ☕", "tags": ["a", "b"], "nested": {"k": 1.5, "none": None}}
    [i] = catalog.upsert("default", [NewItem("/ü.png", "h", meta)])
    assert catalog.get(i).meta == meta
