import numpy as np
import pytest
from sqlalchemy import inspect

from index.catalog import Catalog, NewItem, StaleRevision


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
        from index.catalog import Base

        Base.metadata.drop_all(cat.engine)  # every table the models know, so each test starts from nothing
        with cat.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    cat.dispose()


def test_migrations_create_the_schema_and_are_idempotent(catalog):
    catalog.migrate()
    insp = inspect(catalog.engine)
    assert {"items", "vectors", "alembic_version"} <= set(insp.get_table_names())
    cols = {c["name"] for c in insp.get_columns("items")}
    assert cols == {"id", "collection", "source", "content_hash", "metadata", "created_at", "updated_at", "deleted_at",
                    "source_metadata", "user_metadata", "owner", "root", "revision", "deleted_by"}


def test_migrations_match_the_models(catalog):
    """What Alembic autogenerate would add: nothing, so models and migrations describe one schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from index.catalog import Base

    with catalog.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if d[0] in ("add_table", "remove_table", "add_column", "remove_column")] == []


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


def _vectors(n, dim=4, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_vectors_are_written_with_their_items_and_read_back(catalog):
    items = [NewItem(f"/img/{i}.png", f"h{i}", {"i": i}) for i in range(5)]
    vecs = _vectors(5)
    ids = catalog.write_batch("c", "fp", items, vecs)
    assert catalog.embedded_hashes("c", "fp") == {f"/img/{i}.png": f"h{i}" for i in range(5)}
    assert catalog.embedded_hashes("c", "other-encoder") == {}
    (got_ids, got), = list(catalog.live_vectors("c", "fp"))
    assert got_ids.tolist() == sorted(ids) and np.array_equal(got, vecs[np.argsort(ids)])

    # new content for one source: its old vector no longer counts until a new one is written
    catalog.upsert("c", [NewItem("/img/2.png", "h2-new", {"i": 2})])
    assert "/img/2.png" not in catalog.embedded_hashes("c", "fp")
    assert ids[2] not in next(catalog.live_vectors("c", "fp"))[0].tolist()
    catalog.write_batch("c", "fp", [NewItem("/img/2.png", "h2-new", {"i": 2})], _vectors(1, seed=9))
    assert catalog.embedded_hashes("c", "fp")["/img/2.png"] == "h2-new"
    assert len(next(catalog.live_vectors("c", "fp"))[0]) == 5


def test_a_failed_batch_writes_nothing(catalog):
    with pytest.raises(ValueError, match="3 items but 2 vectors"):
        catalog.write_batch("c", "fp", [NewItem(f"/x/{i}", "h", {}) for i in range(3)], _vectors(2))
    assert catalog.count("c") == 0 and list(catalog.live_vectors("c", "fp")) == []


def test_deleted_items_vanish_at_once_and_come_back_only_as_documented(catalog):
    ids = catalog.write_batch("c", "fp", [NewItem(f"/d/{i}", f"h{i}", {}) for i in range(3)], _vectors(3), "source:/d")
    assert catalog.delete("c", [ids[1], 999_999]) == [ids[1]]
    assert catalog.delete("c", [ids[1]]) == []  # already deleted
    assert catalog.get(ids[1]) is None and set(catalog.get_many(ids)) == {ids[0], ids[2]}
    assert catalog.count("c") == 2 and catalog.live_ids("c") == {ids[0], ids[2]}
    assert next(catalog.live_vectors("c", "fp"))[0].tolist() == [ids[0], ids[2]]
    assert catalog.delete("other", [ids[0]]) == []  # another collection's id is not touched
    # a person's delete outlives the same bytes seen again; new bytes are a new picture
    assert catalog.upsert("c", [NewItem("/d/1", "h1", {})], "source:/d") == [None] and catalog.get(ids[1]) is None
    assert catalog.upsert("c", [NewItem("/d/1", "h1b", {})], "source:/d") == [ids[1]] and catalog.get(ids[1])
    # what the source deleted (its file was gone) comes back with the file
    assert catalog.delete("c", [ids[2]], by="source") == [ids[2]]
    assert catalog.upsert("c", [NewItem("/d/2", "h2", {})], "source:/d") == [ids[2]] and catalog.get(ids[2])


def test_a_job_changes_only_what_its_source_owns(catalog):
    [mine] = catalog.upsert("c", [NewItem("/d/a.png", "h1", {"v": 1})], "source:/d")
    upload, created = catalog.add_upload("c", "fp", NewItem("/u/ab/ab.png", "ab", {"album": "x"}), _vectors(1)[0])
    assert created and catalog.get(upload).owner == "upload"
    [theirs] = catalog.upsert("c", [NewItem("/e/b.png", "h2", {"v": 1})], "source:/e")
    again = catalog.upsert("c", [NewItem("/d/a.png", "h1", {"v": 2}), NewItem("/u/ab/ab.png", "zz", {}),
                                 NewItem("/e/b.png", "h9", {"v": 9})], "source:/d")
    assert again == [mine, None, None]
    assert catalog.get(upload).meta == {"album": "x"} and catalog.get(upload).content_hash == "ab"
    assert catalog.get(theirs).meta == {"v": 1} and catalog.get(mine).meta == {"v": 2}
    assert catalog.owned_sources("c", "source:/d") == {"/d/a.png": mine}
    assert catalog.foreign_sources("c", "source:/d") == {"/u/ab/ab.png", "/e/b.png"}
    # the same bytes uploaded again: the same item, its metadata replaced
    again = catalog.add_upload("c", "fp", NewItem("/u/ab/ab.png", "ab", {"album": "y"}), _vectors(1)[0])
    assert again == (upload, False)
    assert catalog.get(upload).meta == {"album": "y"}


def test_edits_win_over_the_source_key_by_key_and_revisions_count_changes(catalog):
    [i] = catalog.upsert("c", [NewItem("/d/a.png", "h1", {"name": "src", "cat": "a", "sub": "s"})], "source:/d")
    first = catalog.get(i).revision
    edited = catalog.update_metadata("c", i, {"name": "mine", "cat": None, "album": "kept"})
    assert edited.meta == {"name": "mine", "sub": "s", "album": "kept"} and edited.revision == first + 1
    catalog.upsert("c", [NewItem("/d/a.png", "h1", {"name": "src2", "cat": "b", "sub": "s2"})], "source:/d")
    row = catalog.get(i)
    assert row.meta == {"name": "mine", "sub": "s2", "album": "kept"}
    assert row.source_meta == {"name": "src2", "cat": "b", "sub": "s2"} and row.revision == first + 2
    catalog.upsert("c", [NewItem("/d/a.png", "h1", {"name": "src2", "cat": "b", "sub": "s2"})], "source:/d")
    assert catalog.get(i).revision == first + 2  # nothing changed: no new revision
    with pytest.raises(StaleRevision):
        catalog.update_metadata("c", i, {"x": 1}, revision=first)
    with pytest.raises(StaleRevision):
        catalog.delete("c", [i], revision=first)
    assert catalog.delete("c", [i], revision=first + 2) == [i]


def test_row_ids_are_never_reused(catalog):
    ids = catalog.upsert("c", [NewItem(f"/r/{n}", f"h{n}", {}) for n in range(3)])
    with catalog.engine.begin() as conn:  # a row removed for good (by hand, or a future purge)
        conn.exec_driver_sql(f"DELETE FROM items WHERE id = {max(ids)}")
    [new] = catalog.upsert("c", [NewItem("/r/new", "hn", {})])
    assert new > max(ids)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_catalog_from_the_previous_revision_upgrades_and_keeps_its_rows(db, request, tmp_path):
    """A catalog at revision 0003 (before owners) with an indexed file, an edited and deleted item and an
    upload: after the upgrade every row and vector is there, uploads are known as such, deletes stay."""
    url = request.getfixturevalue("postgres_url") if db == "postgresql" else f"sqlite:///{tmp_path / 'old.db'}"
    blob = r"'\x00000000'::bytea" if db == "postgresql" else "X'00000000'"  # one float32 zero
    old = Catalog(url)
    old.migrate("0003")
    digest = "ab" + "0" * 62
    with old.engine.begin() as conn:
        for i, (source, h, meta, deleted) in enumerate([
                ("/photos/a.png", "h1", '{"name": "a"}', None),
                ("/photos/b.png", "h2", '{"name": "b"}', "2026-11-30 10:00:00"),
                (f"/srv/uploads/ab/{digest}.png", digest, '{"album": "x"}', None)], 1):
            conn.exec_driver_sql(
                "INSERT INTO items (id, collection, source, content_hash, metadata, created_at, updated_at, "
                f"deleted_at) VALUES ({i}, 'default', '{source}', '{h}', '{meta}', '2026-11-29 10:00:00', "
                f"'2026-11-29 10:00:00', {'NULL' if deleted is None else repr(deleted)})")
            conn.exec_driver_sql("INSERT INTO vectors (item_id, fingerprint, content_hash, vector) "
                                 f"VALUES ({i}, 'fp', '{h}', {blob})")
        if db == "postgresql":  # where the sequence would be had these rows been inserted without ids
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('items', 'id'), 3)")
    old.dispose()
    catalog = Catalog(url)
    try:
        catalog.migrate()
        a, upload = catalog.get(1), catalog.get(3)
        assert (a.meta, a.source_meta, a.user_meta, a.owner, a.revision) == ({"name": "a"}, {"name": "a"}, {}, None, 1)
        assert upload.owner == "upload" and upload.meta == {"album": "x"}
        assert catalog.get(2) is None  # still deleted, now as a person's delete: a job leaves it so
        assert catalog.upsert("default", [NewItem("/photos/b.png", "h2", {})], "source:/photos") == [None]
        assert catalog.upsert("default", [NewItem("/photos/a.png", "h1", {"name": "a"})], "source:/photos") == [1]
        assert catalog.get(1).owner == "source:/photos"  # adopted by the first job that lists it
        assert catalog.live_vector_ids("default", "fp").tolist() == [1, 3]
        [new] = catalog.upsert("default", [NewItem("/photos/c.png", "h3", {})], "source:/photos")
        assert new == 4
    finally:
        if db == "postgresql":
            from index.catalog import Base

            Base.metadata.drop_all(catalog.engine)
            with catalog.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        catalog.dispose()



def test_a_source_twice_in_one_batch_keeps_its_last_occurrence(catalog):
    items = [NewItem("/d/1.png", "h1", {"v": 1}), NewItem("/d/2.png", "h2", {}), NewItem("/d/1.png", "h1b", {"v": 2})]
    ids = catalog.write_batch("dup", "fp", items, _vectors(3))
    assert ids[0] == ids[2] != ids[1]
    row = catalog.find("dup", "/d/1.png")
    assert (row.content_hash, row.meta) == ("h1b", {"v": 2})
    parts = list(catalog.live_vectors("dup", "fp"))
    live = dict(zip(parts[0][0].tolist(), parts[0][1]))
    assert sorted(live) == sorted({ids[0], ids[1]})
    np.testing.assert_array_equal(live[ids[0]], _vectors(3)[2])


def test_streamed_entries_come_in_short_reads_by_id_and_refuse_mixed_sizes(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.migrate()
    vectors = _vectors(10)
    ids = catalog.write_batch("c", "fp", [NewItem(f"/v/{i}", f"h{i}", {}) for i in range(10)], vectors)
    chunks = list(catalog.live_entries("c", "fp", chunk=3))
    assert [len(c[0]) for c in chunks] == [3, 3, 3, 1]
    assert np.concatenate([c[0] for c in chunks]).tolist() == sorted(ids)
    np.testing.assert_array_equal(np.concatenate([c[2] for c in chunks]), vectors[np.argsort(ids)])
    assert catalog.live_vector_ids("c", "fp").tolist() == sorted(ids)
    (got, _, got_vectors), = catalog.entries_of([ids[4], ids[1], 999], "fp")
    assert got.tolist() == sorted([ids[4], ids[1]]) and got_vectors.flags.writeable
    with catalog.engine.begin() as conn:  # one vector stored with another length, as corruption would
        conn.exec_driver_sql("UPDATE vectors SET vector = substr(vector, 1, 8) WHERE item_id = ?", (ids[2],))
    with pytest.raises(ValueError, match="different sizes"):
        list(catalog.live_entries("c", "fp"))
    catalog.dispose()


def test_a_write_waits_for_another_writer_instead_of_failing_as_locked(tmp_path):
    """Another process commits a write while our PATCH is about to start: with a deferred transaction the
    PATCH would read a snapshot that the commit makes stale and fail at once ("database is locked")."""
    import sqlite3
    import threading

    path = tmp_path / "c.db"
    catalog = Catalog(f"sqlite:///{path}")
    catalog.migrate()
    [i] = catalog.upsert("c", [NewItem("/a.png", "h", {"v": 1})])
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE items SET content_hash = content_hash")
    threading.Timer(0.5, other.execute, ("COMMIT",)).start()
    try:
        assert catalog.update_metadata("c", i, {"w": 2}).meta == {"v": 1, "w": 2}
    finally:
        catalog.dispose()
        other.close()
