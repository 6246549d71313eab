"""bench/emoji_quality.py: the held-out splits and the cross-vendor measure both quality benches report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import emoji_quality  # noqa: E402
from common import emoji_rows  # noqa: E402


def test_splits_hold_out_a_fifth_of_the_codes_and_each_vendor():
    _, rows = emoji_rows(REPO / "samples" / "emoji")
    data = emoji_quality.splits(rows)
    assert set(data) == set(emoji_quality.SETTINGS)
    train, text, image = data["b"]
    codes = {r["code"] for r in rows}
    unseen = {r["code"] for r in text}
    assert 0.1 < len(unseen) / len(codes) < 0.3
    assert not unseen & {r["code"] for r in train}
    assert len(train) + len(image) == len(rows)
    train, text, image = data["a-google"]
    assert {r["vendor"] for r in train} == {"google"} and {r["vendor"] for r in text} == {"twitter"}
    assert image == rows


def test_cross_vendor_recall_searches_the_other_vendor_only():
    rows = [{"vendor": "google", "code": "a"}, {"vendor": "google", "code": "b"},
            {"vendor": "twitter", "code": "a"}, {"vendor": "twitter", "code": "b"}]
    # google a's nearest image is google b (a same-vendor distractor the measure never searches), then twitter a;
    # google b is nearer twitter a (0.58) than twitter b (0.31): a miss; both twitter images find their google match
    vecs = np.array([[1.0, 0.0], [0.95, 0.31], [0.8, -0.6], [0.0, 1.0]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    r = emoji_quality.cross_vendor_recall(vecs, rows, ks=(1, 2))
    assert r["google->twitter R@1"] == 0.5
    assert r["twitter->google R@1"] == 1.0
    assert r["cross-vendor R@1"] == 0.75
    assert r["cross-vendor R@2"] == 1.0


def test_gather_merges_runs_made_side_by_side(tmp_path, monkeypatch):
    """Each parallel run wrote its own NAME.json; gathering keeps every cell and every run's command."""
    import json

    import common

    monkeypatch.setattr(emoji_quality, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(emoji_quality, "emoji_rows", lambda: emoji_rows(REPO / "samples" / "emoji"))
    cell = {"cross-vendor R@1": 0.5, "cross-vendor R@10": 0.7, "train": {"wall_s": 60.0, "cpu_s": 50.0}}
    runs = {"run_g": ("x.py --settings a-google", {"default recipe": {"a-google": cell}}),
            "run_b": ("x.py --settings b", {"default recipe": {"b": {**cell, "cross-vendor R@1": 0.6}},
                                            "untrained": {"b": {**cell, "cross-vendor R@1": 0.2}}}),
            "run_b2": ("x.py --settings b --again", {"default recipe": {"b": {**cell, "cross-vendor R@1": 0.65}}})}
    for name, (command, results) in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"command": command, "results": results}))
    bench = emoji_quality.Bench({}, lambda *a: [], "t")
    table = bench.gather(["run_g", "run_b", "run_b2"], "merged")
    assert table["default recipe"]["a-google"]["cross-vendor R@1"] == 0.5
    assert table["default recipe"]["b"]["cross-vendor R@1"] == 0.65  # the later run's cell wins
    assert table["untrained"]["b"]["cross-vendor R@1"] == 0.2
    record = json.loads((tmp_path / "merged.json").read_text())
    assert record["gathered"] == ["x.py --settings a-google", "x.py --settings b", "x.py --settings b --again"]
    assert record["results"] == table
    assert "0.650" in (tmp_path / "merged.txt").read_text()
    # gathering a gathered file keeps the original commands, not the gather's own
    bench.gather(["merged"], "again")
    assert json.loads((tmp_path / "again.json").read_text())["gathered"] == record["gathered"]
