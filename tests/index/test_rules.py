"""Each rebuild rule on its own: the situations that call for a full build, and those that do not."""

import numpy as np
import pytest

from index import choose, rules
from index.faiss_build import fill, new_index
from index.manifest import AUTO, IndexPolicy, Manifest
from index.rules import RULES, Rule, Situation, first_reason
from index.version import open_version, publish

FINGERPRINT = "f" * 64
DIM = 8
BUDGET = 2**30


def _version(tmp_path, factory="Flat", n=100, members=True, tombstones=None, **manifest):
    """A published version of ``n`` random vectors (ids 0..n-1, content keys = ids)."""
    vectors = np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)
    index = new_index(DIM, factory)
    if not index.is_trained:
        index.train(vectors)
    ids = np.arange(n, dtype=np.int64)
    fill(index, vectors, ids)
    data = {"encoder": {"fingerprint": FINGERPRINT}, "dim": DIM, "factory": factory, "collection": "default",
            "choice": {"reason": "given", "memory_budget": None}, "tuned_count": n, **manifest}
    path = publish(tmp_path / "index", index, Manifest.from_json(data),
                   members=(ids, ids.astype(np.uint64)) if members else None, tombstones=tombstones)
    return open_version(path)


def _situation(current, live_ids=None, policy=None, rebuild=False, collection="default", fingerprint=FINGERPRINT):
    """The rules' view of ``current``; the catalog holds ``live_ids`` (keys = ids: unchanged items)."""
    live = np.arange(current.index.ntotal if current is not None else 0) if live_ids is None else live_ids
    live = np.asarray(live, dtype=np.int64)
    return Situation(collection, policy or IndexPolicy(factory="Flat"), fingerprint, current,
                     lambda: (live, live.astype(np.uint64)), rebuild)


def test_rules_have_distinct_names_and_the_first_reason_wins(tmp_path):
    assert len({r.name for r in RULES}) == len(RULES) and RULES[0] is rules.asked_explicitly
    v = _version(tmp_path)
    assert first_reason(RULES, _situation(v)) is None  # nothing changed: an update (of nothing) serves
    rule, reason = first_reason(RULES, _situation(v, rebuild=True, fingerprint="e" * 64))
    assert rule.name == "asked_explicitly" and reason == "a rebuild was asked for"
    always = Rule("always", lambda s: "because")
    assert first_reason([always, rules.asked_explicitly], _situation(v, rebuild=True)) == (always, "because")


def test_asked_explicitly(tmp_path):
    v = _version(tmp_path)
    assert rules.asked_explicitly(_situation(v, rebuild=True)) == "a rebuild was asked for"
    assert rules.asked_explicitly(_situation(v)) is None


def test_no_current_version(tmp_path):
    assert rules.no_current_version(_situation(None)) == "no version published yet"
    assert rules.no_current_version(_situation(_version(tmp_path))) is None


def test_other_encoder(tmp_path):
    v = _version(tmp_path)
    assert "built by another encoder" in rules.other_encoder(_situation(v, fingerprint="e" * 64))
    assert rules.other_encoder(_situation(v)) is None


def test_other_collection(tmp_path):
    v = _version(tmp_path, collection="photos")
    assert rules.other_collection(_situation(v)) == f"{v.name} holds collection 'photos'"
    assert rules.other_collection(_situation(v, collection="photos")) is None


def test_no_member_list(tmp_path):
    assert "no member list" in rules.no_member_list(_situation(_version(tmp_path, members=False)))
    assert rules.no_member_list(_situation(_version(tmp_path))) is None


def test_other_index_asked(tmp_path):
    given = _version(tmp_path / "given", "Flat")
    assert rules.other_index_asked(_situation(given, policy=IndexPolicy(factory="Flat"))) is None
    assert (rules.other_index_asked(_situation(given, policy=IndexPolicy(factory="HNSW16")))
            == f"{given.name} is Flat, HNSW16 was asked for")
    assert (rules.other_index_asked(_situation(given, policy=IndexPolicy(memory_budget=BUDGET)))
            == f"{given.name} was chosen for another memory budget (None)")
    auto = _version(tmp_path / "auto", "Flat", choice={"reason": "small", "memory_budget": BUDGET})
    assert rules.other_index_asked(_situation(auto, policy=IndexPolicy(memory_budget=BUDGET))) is None
    assert (rules.other_index_asked(_situation(auto, policy=IndexPolicy(memory_budget=BUDGET // 2)))
            == f"{auto.name} was chosen for another memory budget ({BUDGET})")
    assert "Flat was asked for" in rules.other_index_asked(_situation(auto, policy=IndexPolicy(factory="Flat")))


def test_other_index_asked_follows_a_recorded_policy(tmp_path):
    recorded = _version(tmp_path, "Flat", policy={"factory": AUTO, "memory_budget": BUDGET, "keep": 2},
                        choice={"reason": "small", "memory_budget": BUDGET})
    assert recorded.manifest.policy == IndexPolicy(memory_budget=BUDGET, keep=2)
    assert rules.other_index_asked(_situation(recorded, policy=IndexPolicy(memory_budget=BUDGET, keep=9))) is None


def test_other_target_recall(tmp_path):
    tuned = _version(tmp_path / "tuned", "HNSW16", tuning={"params": {"efSearch": 16}, "recall": 0.97, "target": 0.95})
    assert (rules.other_target_recall(_situation(tuned, policy=IndexPolicy(factory="HNSW16", target_recall=0.99)))
            == f"{tuned.name} was tuned for recall 0.95")
    assert rules.other_target_recall(_situation(tuned, policy=IndexPolicy(factory="HNSW16"))) is None
    exact = _version(tmp_path / "exact", tuning={"params": {}, "recall": 1.0, "note": "exact index"})
    assert rules.other_target_recall(_situation(exact, policy=IndexPolicy(factory="Flat", target_recall=0.5))) is None


def test_no_items_left(tmp_path):
    v = _version(tmp_path)
    assert rules.no_items_left(_situation(v, live_ids=[])) == "no items left"
    assert rules.no_items_left(_situation(v, live_ids=[3])) is None


def test_not_updatable_in_place(tmp_path):
    transformed = _version(tmp_path / "pca", "PCA4,Flat")
    assert rules.not_updatable_in_place(_situation(transformed)) == "a PCA4,Flat index cannot be updated in place"
    assert rules.not_updatable_in_place(_situation(_version(tmp_path / "flat"))) is None
    assert rules.not_updatable_in_place(_situation(_version(tmp_path / "hnsw", "HNSW16"))) is None


def test_count_drifted(tmp_path):
    v = _version(tmp_path, n=100)
    assert rules.count_drifted(_situation(v, live_ids=np.arange(100 + 101))) == \
        "201 items, the index was chosen and tuned for 100"
    assert rules.count_drifted(_situation(v, live_ids=np.arange(200))) is None  # RETUNE_FACTOR x, not past it
    assert rules.count_drifted(_situation(v, live_ids=np.arange(50))) is None
    assert "49 items" in rules.count_drifted(_situation(v, live_ids=np.arange(49)))


def test_automatic_choice_differs(tmp_path, monkeypatch):
    monkeypatch.setattr(choose, "EXACT_BELOW", 100)  # Flat below 100 vectors, HNSW above
    v = _version(tmp_path, n=90, choice={"reason": "small", "memory_budget": BUDGET})
    auto = IndexPolicy(memory_budget=BUDGET)
    assert rules.automatic_choice_differs(_situation(v, live_ids=np.arange(105), policy=auto)) is None  # < 10 % past
    assert (rules.automatic_choice_differs(_situation(v, live_ids=np.arange(120), policy=auto))
            == "the automatic choice for 120 items is HNSW, not Flat")
    assert rules.automatic_choice_differs(_situation(v, live_ids=np.arange(120))) is None  # a given factory
    # a Flat chosen because the tuned HNSW did not pay counts as HNSW: no rebuild for HNSW's counts
    rejected = _version(tmp_path / "rejected", n=90, choice={"reason": "slow", "memory_budget": BUDGET,
                                                              "rejected": {"factory": "HNSW32"}})
    assert rules.automatic_choice_differs(_situation(rejected, live_ids=np.arange(120), policy=auto)) is None


def test_too_many_tombstones(tmp_path):
    graph = _version(tmp_path / "hnsw", "HNSW16", n=100, tombstones=np.arange(10))
    hnsw = IndexPolicy(factory="HNSW16")
    # 10 dead already + 11 removed = 21 of 100 stored: past COMPACT_DEAD (a fifth)
    assert (rules.too_many_tombstones(_situation(graph, live_ids=np.arange(21, 100), policy=hnsw))
            == "21 of 100 stored vectors would be tombstones (compaction above 20%)")
    assert rules.too_many_tombstones(_situation(graph, live_ids=np.arange(20, 100), policy=hnsw)) is None
    flat = _version(tmp_path / "flat", "Flat", n=100)  # removes by id: never tombstones
    assert rules.too_many_tombstones(_situation(flat, live_ids=np.arange(50, 100))) is None


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_no_rule_objects_to_an_unchanged_version_asked_as_it_was_built(tmp_path, rule):
    assert rule(_situation(_version(tmp_path))) is None
