import json
import threading

import numpy as np
import pytest

from index.faiss_build import fill, new_index
from index.version import (
    EncoderMismatch,
    IndexVersionError,
    current_name,
    open_current,
    open_version,
    prune,
    publish,
)


def _index(n=10, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(100, 100 + n)
    return fill(new_index(dim), vecs, ids), vecs, ids


MANIFEST = {"encoder": {"fingerprint": "f" * 64}, "dim": 8, "metric": "inner_product", "factory": "Flat"}


def test_publish_then_open_current(tmp_path):
    index, vecs, ids = _index()
    path = publish(tmp_path, index, MANIFEST)
    assert current_name(tmp_path) == path.name
    v = open_current(tmp_path)
    assert v.count == 10 and v.dim == 8 and v.manifest["count"] == 10
    scores, found = v.search(vecs[:3], 1)
    assert found[:, 0].tolist() == ids[:3].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    assert json.loads((path / "manifest.json").read_text())["format"] == "lookalike-index/1"


def test_search_fills_missing_slots_with_minus_one(tmp_path):
    index, vecs, _ = _index(n=3)
    v = open_version(publish(tmp_path, index, MANIFEST))
    _, found = v.search(vecs[:1], 5)
    assert found[0, 3:].tolist() == [-1, -1]
    with pytest.raises(ValueError, match=r"\(Q, 8\)"):
        v.search(np.zeros((1, 4), np.float32), 1)


def test_nothing_published_is_a_clear_error(tmp_path):
    with pytest.raises(IndexVersionError, match="python -m index build"):
        open_current(tmp_path)


def test_encoder_mismatch_names_both_fingerprints(tmp_path):
    v = open_version(publish(tmp_path, _index()[0], MANIFEST))
    v.check_encoder("f" * 64)
    with pytest.raises(EncoderMismatch, match="ffffffff.*abcdabcd"):
        v.check_encoder("abcd" * 16)


def test_old_versions_are_pruned_but_current_kept(tmp_path):
    names = [publish(tmp_path, _index(seed=i)[0], MANIFEST, keep=100).name for i in range(4)]
    assert prune(tmp_path, keep=2) == names[:2]
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == names[2:]
    assert current_name(tmp_path) == names[-1]


def test_a_crash_while_writing_leaves_the_current_version_intact(tmp_path, monkeypatch):
    publish(tmp_path, _index(n=5)[0], MANIFEST)
    before = current_name(tmp_path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("index.version._fsync_dir", boom)
    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path, _index(n=7)[0], MANIFEST)
    monkeypatch.undo()
    assert current_name(tmp_path) == before
    assert open_current(tmp_path).count == 5
    assert not list((tmp_path / "versions").glob(".tmp-*"))


def test_readers_never_see_a_half_written_version(tmp_path):
    publish(tmp_path, _index(n=5)[0], MANIFEST)
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                assert open_current(tmp_path).count in (5, 50)
            except Exception as exc:  # noqa: BLE001 - any failure is the test's failure
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(10):
        publish(tmp_path, _index(n=50, seed=i)[0], MANIFEST, keep=3)
    stop.set()
    t.join()
    assert errors == []


def test_tombstones_are_left_out_of_search_count_and_ids(tmp_path):
    index, vecs, ids = _index(n=10)
    path = publish(tmp_path, index, MANIFEST, members=(ids, np.arange(10, dtype=np.uint64)), tombstones=[2, 7, 2])
    v = open_version(path)
    assert v.count == 8 and v.manifest["tombstones"] == 2 and v.manifest["stored"] == 10
    assert v.ids().tolist() == [i for i in ids.tolist() if i not in (ids[2], ids[7])]
    _, found = v.search(vecs, 10)
    assert all(ids[2] not in row and ids[7] not in row and min(row[:8]) >= 0 for row in found.tolist())
    assert found[0, 0] == ids[0] and found[2, 0] != ids[2]
    members = v.members()
    assert members[0].tolist() == ids.tolist() and members[1].dtype == np.uint64


def test_a_member_list_or_tombstone_file_that_disagrees_is_refused(tmp_path):
    index, _, ids = _index(n=10)
    with pytest.raises(ValueError, match="9 members for 10 stored vectors"):
        publish(tmp_path, index, MANIFEST, members=(ids[:9], np.zeros(9, np.uint64)))
    path = publish(tmp_path, index, MANIFEST, tombstones=[1])
    (path / "tombstones.npy").unlink()
    with pytest.raises(IndexVersionError, match="counts 1 tombstones"):
        open_version(path)


@pytest.mark.parametrize("factory", ["HNSW8", "IVF8,Flat"])
def test_an_exhaustive_search_reaches_every_live_vector(tmp_path, factory):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(400, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1000, 1400)
    index = fill(new_index(8, factory), vecs, ids)
    dead = [3, 99] if factory.startswith("HNSW") else None
    manifest = {**MANIFEST, "search_params": {"efSearch": 8} if dead else {"nprobe": 1}}
    v = open_version(publish(tmp_path, index, manifest, tombstones=dead))
    live = set(ids.tolist()) - ({1003, 1099} if dead else set())
    _, some = v.search(vecs[:2], 400)
    assert all(len(set(row[row >= 0].tolist())) < len(live) for row in some)  # the approximate search stops short
    scores, every = v.search(vecs[:2], 400, exhaustive=True)
    assert all(set(row[row >= 0].tolist()) == live for row in every) and not v.visits_all
    assert (np.diff(scores[0][every[0] >= 0]) <= 1e-6).all()  # best first


@pytest.mark.parametrize("factory", ["PCA8,IVF8,Flat", "IDMap2,IVF8,Flat"])
def test_an_exhaustive_search_opens_every_list_under_id_maps_and_transforms(tmp_path, factory):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(800, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = fill(new_index(16, factory), vecs, np.arange(800))
    v = open_version(publish(tmp_path, index, {**MANIFEST, "dim": 16, "search_params": {"nprobe": 1}}))
    assert (v.search(vecs[:2], 800)[1] >= 0).sum(axis=1).max() < 800
    assert ((v.search(vecs[:2], 800, exhaustive=True)[1] >= 0).sum(axis=1) == 800).all()
