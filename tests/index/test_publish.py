"""The publisher: one policy object in, the policy recorded, republish/rebuild/delete as the current version asks,
its rebuild rules replaceable."""

import numpy as np
import pytest

from index.catalog import NewItem
from index.manifest import IndexPolicy
from index.publish import JobRecord, Publisher
from index.rules import Rule, asked_explicitly
from index.verify import verify
from index.version import IndexVersionError, open_current, read_manifest


def _put(catalog, encoder, names, seed=0, collection="default"):
    vectors = np.random.default_rng(seed).normal(size=(len(names), encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return catalog.write_batch(collection, encoder.fingerprint, [NewItem(n, f"{n}-v1", {}) for n in names], vectors)


def test_publish_records_the_policy_and_the_job_and_republish_follows_it(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    _put(catalog, encoder, [f"img{i}" for i in range(60)])
    policy = IndexPolicy(factory="HNSW16", target_recall=0.9, keep=2)
    publisher = Publisher(catalog, out, encoder)
    first = publisher.publish("default", policy, job=JobRecord(source="/photos", failures=3))
    assert first.action == "built" and first.rule == "no_current_version"
    m = read_manifest(first.path)
    assert m.policy == policy and m.source == "/photos" and m.failures == 3 and m.generation == 1
    assert m.built_because == "no version published yet" and m.tuning.target == 0.9

    for i in range(3):  # as the service does after uploads: the recorded policy, two versions kept
        _put(catalog, encoder, [f"new{i}"], seed=i + 1)
        again = publisher.republish()
        assert again.action == "updated" and again.rule is None
    m = read_manifest(again.path)
    assert m.policy == policy and m.factory == "HNSW16" and m.generation == 4 and m.update.added == 1
    assert m.source == "/photos" and m.failures is None  # the source is carried; the job's failures are its own
    assert len(list((out / "versions").iterdir())) == 2


def test_rebuild_compacts_and_says_why(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    ids = _put(catalog, encoder, [f"img{i}" for i in range(60)])
    publisher = Publisher(catalog, out, encoder)
    publisher.publish("default", IndexPolicy(factory="HNSW16"))
    catalog.delete("default", ids[:5])
    assert len(open_current(out).tombstones) == 0 and publisher.republish().action == "updated"
    assert len(open_current(out).tombstones) == 5
    rebuilt = publisher.rebuild(keep=3)
    assert (rebuilt.action, rebuilt.rule, rebuilt.detail) == ("built", "asked_explicitly", "a rebuild was asked for")
    v = open_current(out)
    assert len(v.tombstones) == 0 and v.count == 55 and v.manifest.policy.keep == 3
    assert v.manifest.built_because == "a rebuild was asked for"


def test_delete_hides_the_items_and_publishes_without_them(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    ids = _put(catalog, encoder, [f"img{i}" for i in range(30)])
    publisher = Publisher(catalog, out, encoder)
    publisher.publish("default", IndexPolicy(factory="Flat"))
    deleted, published = publisher.delete([ids[0], ids[1], 999_999])
    assert sorted(deleted) == sorted(ids[:2]) and published.action == "updated"
    assert sorted(open_current(out).ids().tolist()) == sorted(ids[2:])
    assert verify(out, catalog.url).ok


def test_republish_needs_a_version_by_the_same_encoder(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    with pytest.raises(IndexVersionError, match="no index version"):
        Publisher(catalog, out, encoder).republish()
    _put(catalog, encoder, [f"img{i}" for i in range(10)])
    Publisher(catalog, out, encoder).publish("default", IndexPolicy(factory="Flat"))
    other = type("Other", (), {"fingerprint": "e" * 64, "dim": encoder.dim})()
    with pytest.raises(IndexVersionError, match="built by encoder"):
        Publisher(catalog, out, other).republish()


def test_the_rules_are_the_publishers_to_choose(catalog, encoder, tmp_path):
    out = tmp_path / "index"
    _put(catalog, encoder, [f"img{i}" for i in range(20)])
    Publisher(catalog, out, encoder).publish("default", IndexPolicy(factory="Flat"))
    _put(catalog, encoder, ["one more"], seed=1)
    always = Rule("every_time", lambda situation: "this publisher always rebuilds")
    published = Publisher(catalog, out, encoder, rules=(asked_explicitly, always)).publish(
        "default", IndexPolicy(factory="Flat"))
    assert (published.action, published.rule) == ("built", "every_time")
    assert read_manifest(published.path).built_because == "this publisher always rebuilds"
    with pytest.raises(IndexVersionError, match="no_current_version"):  # rules that would update nothing
        Publisher(catalog, tmp_path / "other", encoder, rules=()).publish("default", IndexPolicy(factory="Flat"))
