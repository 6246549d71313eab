"""Publishing the catalog's changes as an update of the current version, and when it rebuilds instead."""

import subprocess
import sys

import numpy as np
import pytest

from index import choose
from index.catalog import NewItem
from index.manifest import IndexPolicy
from index.publish import Publisher
from index.rules import COMPACT_DEAD
from index.verify import verify
from index.version import open_current, publish
from tests.conftest import REPO


def _unit(n, dim, seed):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _put(catalog, encoder, names, seed, tag="v1"):
    """Write items (source = name, content hash = name + tag) with random vectors; returns {name: (id, vector)}."""
    vectors = _unit(len(names), encoder.dim, seed)
    ids = catalog.write_batch("default", encoder.fingerprint,
                              [NewItem(name, f"{name}-{tag}", {}) for name in names], vectors)
    return {name: (i, v) for name, i, v in zip(names, ids, vectors)}


def _publish(catalog, encoder, out, factory, rebuild=False, **policy):
    return Publisher(catalog, out, encoder).publish("default", IndexPolicy(factory=factory, **policy), rebuild=rebuild)


def _top(version, vector, k=1):
    return version.search(vector[None, :], k)[1][0].tolist()


# removable by id, tombstones, removable from inverted lists, tombstones again (a refine stage cannot remove)
FACTORIES = ["Flat", "HNSW16", "IVF4,Flat", "IVF4,PQ4x4,RFlat"]
TOMBSTONED = {"HNSW16", "IVF4,PQ4x4,RFlat"}


@pytest.mark.parametrize("factory", FACTORIES)
def test_adds_changes_and_deletes_are_applied_without_a_rebuild(catalog, encoder, tmp_path, factory):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(200)], seed=0)
    first = _publish(catalog, encoder, out, factory)
    assert first.action == "built"
    tuned = open_current(out).manifest.tuning

    new = _put(catalog, encoder, [f"new{i}" for i in range(10)], seed=1)
    old_id, old_vector = items["img5"]
    changed = _put(catalog, encoder, ["img5"], seed=2, tag="v2")  # same source, new bytes: same id, new vector
    gone = [items[f"img{i}"][0] for i in range(20, 30)]
    catalog.delete("default", gone)

    second = _publish(catalog, encoder, out, factory)
    assert second.action == "updated" and second.detail.startswith("+11 -11 on ")
    v = open_current(out)
    assert v.manifest.factory == factory and v.manifest.update.base == first.path.name
    assert v.manifest.tuning == tuned and v.manifest.tuned_count == 200  # kept, not re-tuned
    assert v.count == 200 + 10 - 10
    live = set(v.ids().tolist())
    assert {i for i, _ in new.values()} <= live and not live & set(gone) and len(live) == v.count
    assert _top(v, changed["img5"][1]) == [old_id]  # found by its new vector
    scores, _ = v.search(old_vector[None, :], 1)
    assert scores[0, 0] < 0.999  # its old vector is gone
    _, everything = v.search(_unit(5, encoder.dim, 9), v.count + 50)
    found = everything[everything >= 0]
    assert not set(found.tolist()) & set(gone)
    if factory == "Flat":  # exact search returns every live vector (IVF and HNSW may not reach them all)
        assert all(len(set(row[row >= 0].tolist())) == v.count for row in everything)
    report = verify(out, catalog.url)
    assert report.ok, report
    assert report.tombstones == (11 if factory in TOMBSTONED else 0)


def test_hnsw_tombstones_are_never_returned_and_survive_a_memory_mapped_open(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(300)], seed=0)
    _publish(catalog, encoder, out, "HNSW16")
    doomed = {name: items[name] for name in list(items)[:40]}
    catalog.delete("default", [i for i, _ in doomed.values()])
    assert _publish(catalog, encoder, out, "HNSW16").action == "updated"
    for mmap in (False, True):
        v = open_current(out, mmap=mmap)
        assert v.manifest.tombstones == len(v.tombstones) == 40 and v.manifest.stored == 300
        assert v.count == 260 == len(v.ids())
        for i, vector in doomed.values():  # each deleted vector's nearest neighbour is some other item
            scores, found = v.search(vector[None, :], 5)
            assert i not in found[0].tolist() and (found[0] >= 0).all() and scores[0, 0] < 0.999


def test_tombstones_past_the_limit_compact_into_a_rebuild(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(200)], seed=0)
    _publish(catalog, encoder, out, "HNSW16")
    ids = [i for i, _ in items.values()]
    catalog.delete("default", ids[:30])  # 30 of 200: under the limit
    assert _publish(catalog, encoder, out, "HNSW16").action == "updated"
    catalog.delete("default", ids[30:45])  # 45 of 200 stored would be tombstones: over COMPACT_DEAD
    assert 45 / 200 > COMPACT_DEAD > 30 / 200
    third = _publish(catalog, encoder, out, "HNSW16")
    assert third.action == "built" and "tombstones" in third.detail
    v = open_current(out)
    assert len(v.tombstones) == 0 and v.index.ntotal == v.count == 155 and v.manifest.tuned_count == 155
    assert verify(out, catalog.url).ok


def test_growth_past_what_the_index_was_tuned_for_rebuilds(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    _put(catalog, encoder, [f"img{i}" for i in range(100)], seed=0)
    _publish(catalog, encoder, out, "IVF4,Flat")
    _put(catalog, encoder, [f"more{i}" for i in range(90)], seed=1)
    assert _publish(catalog, encoder, out, "IVF4,Flat").action == "updated"  # 190 <= 2 x 100
    _put(catalog, encoder, [f"yet{i}" for i in range(20)], seed=2)
    rebuilt = _publish(catalog, encoder, out, "IVF4,Flat")
    assert rebuilt.action == "built" and "tuned for 100" in rebuilt.detail
    assert open_current(out).manifest.tuned_count == 210


def test_an_automatic_choice_that_would_change_rebuilds_past_a_margin(catalog, encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(choose, "EXACT_BELOW", 250)  # Flat below 250 vectors, HNSW32 from there
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(200)], seed=0)
    assert _publish(catalog, encoder, out, "auto").action == "built"
    assert open_current(out).manifest.factory == "Flat"
    _put(catalog, encoder, [f"more{i}" for i in range(60)], seed=1)
    assert _publish(catalog, encoder, out, "auto").action == "updated"  # 260: past 250, not by 10 %
    _put(catalog, encoder, [f"yet{i}" for i in range(20)], seed=2)
    rebuilt = _publish(catalog, encoder, out, "auto")
    assert rebuilt.action == "built" and "automatic choice for 280 items is HNSW, not Flat" in rebuilt.detail
    ids = [i for i, _ in items.values()]
    catalog.delete("default", ids[:40])
    assert _publish(catalog, encoder, out, "auto").action == "updated"  # 240: back under 250, not by 10 %
    catalog.delete("default", ids[40:60])
    assert "automatic choice for 220 items is Flat" in _publish(catalog, encoder, out, "auto").detail


@pytest.mark.parametrize("factory", ["PCA8,HNSW16", "IDMap2,IVF4,Flat"])
def test_indexes_that_cannot_be_updated_in_place_are_rebuilt(catalog, encoder, tmp_path, factory):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(200)], seed=0)
    _publish(catalog, encoder, out, factory)
    catalog.delete("default", [items["img0"][0]])
    _put(catalog, encoder, ["new"], seed=1)
    again = _publish(catalog, encoder, out, factory)
    assert again.action == "built" and "cannot be updated in place" in again.detail
    assert verify(out, catalog.url).ok


def test_repeated_hnsw_updates_keep_one_live_vector_per_item(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(300)], seed=0)
    _publish(catalog, encoder, out, "HNSW16")
    item = items["img7"][0]
    for round_, seed in enumerate((11, 12, 13)):  # the same item changes three times: three dead copies
        latest = _put(catalog, encoder, ["img7"], seed=seed, tag=f"v{round_ + 2}")["img7"][1]
        catalog.delete("default", [items[f"img{100 + round_}"][0]])
        assert _publish(catalog, encoder, out, "HNSW16").action == "updated"
        v = open_current(out)
        stored, _ = v.members()
        assert (stored == item).sum() == round_ + 2 and len(v.tombstones) == 2 * (round_ + 1)
        assert (v.ids() == item).sum() == 1 and len(set(v.ids().tolist())) == v.count == 300 - (round_ + 1)
        scores, found = v.search(latest[None, :], 3)
        assert found[0, 0] == item and scores[0, 0] > 0.999 and item not in found[0, 1:].tolist()
        assert verify(out, catalog.url).ok


def test_asking_for_another_factory_or_budget_rebuilds(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    _put(catalog, encoder, [f"img{i}" for i in range(50)], seed=0)
    _publish(catalog, encoder, out, "Flat")
    _put(catalog, encoder, ["one more"], seed=1)
    other = _publish(catalog, encoder, out, "HNSW16")
    assert other.action == "built" and "Flat, HNSW16 was asked for" in other.detail
    assert _publish(catalog, encoder, out, "auto", memory_budget=2**30).action == "built"
    assert _publish(catalog, encoder, out, "auto", memory_budget=2**30).action == "unchanged"
    assert _publish(catalog, encoder, out, "auto", memory_budget=2**29).action == "built"


def test_a_version_without_a_member_list_is_rebuilt(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    _put(catalog, encoder, [f"img{i}" for i in range(20)], seed=0)
    built = _publish(catalog, encoder, out, "Flat")
    old = open_current(out)
    publish(out, old.index, old.manifest)  # as an older lookalike wrote them
    assert open_current(out).members() is None
    again = _publish(catalog, encoder, out, "Flat")
    assert again.action == "built" and "no member list" in again.detail and again.path != built.path


def test_the_served_version_is_not_touched_by_an_update(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(100)], seed=0)
    _publish(catalog, encoder, out, "Flat")
    served = open_current(out)
    catalog.delete("default", [items["img0"][0]])
    _put(catalog, encoder, ["new"], seed=1)
    assert _publish(catalog, encoder, out, "Flat").action == "updated"
    assert served.count == 100 and _top(served, items["img0"][1]) == [items["img0"][0]]


def test_verify_reports_items_changed_since_they_were_indexed(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(20)], seed=0)
    _publish(catalog, encoder, out, "Flat")
    _put(catalog, encoder, ["img3"], seed=5, tag="v2")  # re-embedded in the catalog, not yet published
    report = verify(out, catalog.url)
    assert not report.ok and report.stale == [items["img3"][0]]
    assert report.missing_from_index == [] and report.not_in_catalog == []
    proc = subprocess.run([sys.executable, "-m", "index", "verify", str(out), "--database-url", catalog.url],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "1 items changed since they were indexed" in proc.stdout
    assert _publish(catalog, encoder, out, "Flat").detail.startswith("+1 -1")
    assert verify(out, catalog.url).ok


def test_cli_compact_rebuilds_the_current_version(catalog, encoder, micro_encoder, tmp_path):
    out = tmp_path / "index"
    items = _put(catalog, encoder, [f"img{i}" for i in range(100)], seed=0)
    _publish(catalog, encoder, out, "HNSW16")
    catalog.delete("default", [i for i, _ in list(items.values())[:10]])
    _publish(catalog, encoder, out, "HNSW16")
    assert len(open_current(out).tombstones) == 10
    proc = subprocess.run([sys.executable, "-m", "index", "compact", str(out), "--encoder", str(micro_encoder),
                           "--database-url", catalog.url], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "10 tombstones dropped): 90 vectors" in proc.stdout
    v = open_current(out)
    assert len(v.tombstones) == 0 and v.count == v.index.ntotal == 90 and v.manifest.factory == "HNSW16"
    assert verify(out, catalog.url).ok


def test_a_build_that_falls_back_to_flat_records_the_members_of_its_second_pass(catalog, encoder, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(choose, "EXACT_BELOW", 100)  # HNSW32 is chosen at 300 items ...
    real = choose.tune_on

    def slow(*args, **kwargs):  # ... and searches no faster than exact search
        result = real(*args, **kwargs)
        return {**result, "seconds": result["exact_seconds"] * 2} if "exact_seconds" in result else result

    monkeypatch.setattr(choose, "tune_on", slow)
    _put(catalog, encoder, [f"img{i}" for i in range(300)], seed=0)
    _publish(catalog, encoder, tmp_path / "index", "auto")
    v = open_current(tmp_path / "index")
    assert v.manifest.factory == "Flat" and v.manifest.choice.rejected["factory"] == "HNSW32"
    assert v.members()[0].tolist() == v.ids().tolist() and verify(tmp_path / "index", catalog.url).ok
