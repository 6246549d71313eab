"""The typed manifest reads every manifest earlier lookalikes wrote (``manifests/``, each written by its
own commit's code), keeps what it does not know, and says what an update inherits."""

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from index.manifest import (
    AUTO,
    DEFAULT_MEMORY_BUDGET,
    IndexPolicy,
    Manifest,
    UpdateRecord,
)
from index.version import IndexVersionError, publish, read_manifest

WRITTEN = sorted((Path(__file__).parent / "manifests").glob("*.json"))


def _load(name: str) -> dict:
    return json.loads((Path(__file__).parent / "manifests" / f"{name}.json").read_text())


def _in_folder(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return tmp_path


def test_there_is_a_manifest_from_every_format_generation():
    assert {p.name.split("-")[0] for p in WRITTEN} == {"b8f6fa9", "52c74b0", "67769d2", "28e98e5"}


@pytest.mark.parametrize("path", WRITTEN, ids=[p.stem for p in WRITTEN])
def test_every_manifest_written_before_reads_and_writes_back_as_it_was(tmp_path, path):
    data = json.loads(path.read_text())
    manifest = read_manifest(_in_folder(tmp_path, data))
    assert manifest.to_json() == data  # nothing lost, nothing added (no defaults written)
    assert manifest.encoder.fingerprint == data["encoder"]["fingerprint"] and manifest.dim == data["dim"] == 32
    assert manifest.collection == "default" and manifest.version == data["version"]
    assert manifest.tombstones == data.get("tombstones", 0)
    assert manifest.generation == data.get("generation", 0)


def test_the_first_format_reads_with_what_it_lacks_filled_in(tmp_path):
    m = read_manifest(_in_folder(tmp_path, _load("b8f6fa9-built")))
    assert m.params == {} and m.choice is None and m.tuning is None and m.search_params == {}
    assert m.tuned_for == m.count == 40 and m.stored is None and m.failures == 0
    assert m.policy == IndexPolicy(factory="Flat")  # a given factory, the defaults besides


def test_the_policy_of_an_older_manifest_is_what_its_choice_and_tuning_say():
    given = Manifest.from_json(_load("28e98e5-updated"))
    assert given.policy == IndexPolicy(factory="HNSW16", memory_budget=DEFAULT_MEMORY_BUDGET, target_recall=0.95)
    auto = Manifest.from_json(_load("28e98e5-auto"))
    assert auto.tuning.target is None  # an exact index: nothing tuned
    assert auto.policy == IndexPolicy(factory=AUTO, memory_budget=2**30, target_recall=0.95) and auto.policy.auto


def test_a_recorded_policy_is_the_policy():
    data = {**_load("28e98e5-auto"), "policy": {"factory": "auto", "memory_budget": 2**29, "target_recall": 0.9,
                                                "keep": 2}}
    m = Manifest.from_json(data)
    assert m.policy == IndexPolicy(memory_budget=2**29, target_recall=0.9, keep=2)
    assert m.to_json() == data


def test_an_updates_record_and_the_tuning_are_typed():
    m = Manifest.from_json(_load("67769d2-updated-with-tombstone"))
    assert isinstance(m.update, UpdateRecord) and m.update.removed == 1 and m.update.added == 0
    assert m.tuning.params == m.search_params == {"efSearch": 16} and m.tuning.target == 0.95
    assert m.choice.reason == "given" and m.choice.memory_budget is None
    assert m.tuned_for == 40 and m.count == 44 and m.stored == 45


def test_unknown_keys_survive_publish_and_read(tmp_path):
    data = {**_load("28e98e5-updated"), "added_by_a_newer_lookalike": {"shards": [1, 2]}}
    data["tuning"] = {**data["tuning"], "new_timing": 0.5}
    data["encoder"] = {**data["encoder"], "revision": 7}
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(32))
    index.add_with_ids(np.eye(32, dtype=np.float32)[:4], np.arange(4, dtype=np.int64))
    path = publish(tmp_path, index, Manifest.from_json(data))
    written = json.loads((path / "manifest.json").read_text())
    assert written["added_by_a_newer_lookalike"] == {"shards": [1, 2]} and written["tuning"]["new_timing"] == 0.5
    assert written["encoder"]["revision"] == 7
    assert written["count"] == 4 and written["version"] == path.name != data["version"]  # what publish knows
    assert read_manifest(path).to_json() == written


def test_an_update_inherits_all_but_the_facts_of_one_publication():
    base = {**_load("28e98e5-updated"), "failures": 2, "built_because": "x", "someone_elses": 1}
    m = Manifest.from_json(base)
    assert {"update", "built_because", "source", "failures"} <= Manifest.renewed()  # the old REBUILT_ONLY
    assert {"generation", "policy", "catalog"} <= Manifest.renewed()  # set anew by every publication
    carried = m.carried_over(generation=9, catalog="sqlite:///x.db").to_json()
    assert carried["generation"] == 9 and carried["catalog"] == "sqlite:///x.db"
    assert not {"update", "built_because", "source", "failures", "policy"} & carried.keys()
    for key in ("tuning", "choice", "tuned_count", "factory", "search_params", "encoder", "someone_elses"):
        assert carried[key] == base[key]


@pytest.mark.parametrize("change, error", [({"format": "lookalike-index/2"}, "unsupported index format"),
                                           ({"dim": "wide"}, "unreadable manifest.json")])
def test_a_manifest_of_another_format_or_damaged_is_refused(tmp_path, change, error):
    with pytest.raises(IndexVersionError, match=error):
        read_manifest(_in_folder(tmp_path, {**_load("28e98e5-updated"), **change}))
    missing = {k: v for k, v in _load("28e98e5-updated").items() if k != "encoder"}
    with pytest.raises(IndexVersionError, match="unreadable"):
        read_manifest(_in_folder(tmp_path, missing))
