import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from training.eval_clip import EvalConfig, evaluate_encoder, format_table, load_rows
from training.evaluate import grouped_image_recall, zero_shot_accuracy


def test_grouped_recall_never_counts_the_query_itself():
    vecs = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    # 0 and 1 are twins (group a); 2 and 3 are group b; 3 is closer to 2 than to 0/1? cos(3,2)=0.8, cos(3,0)=0.6
    r = grouped_image_recall(vecs, ["a", "a", "b", "b"], ks=(1,))
    assert r == {1: 1.0}
    r = grouped_image_recall(vecs, ["a", "b", "a", "b"], ks=(1, 2))
    # 0 -> 1 (b) miss; 1 -> 0 miss; 2 -> 3 miss; 3 -> 2 miss at k=1; at k=2 every query reaches its twin? 0: [1,3] miss
    assert r[1] == 0.0 and r[2] == 0.5


def test_singleton_groups_are_not_queries():
    vecs = np.array([[1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)  # 0 and 1 both prefer 2
    assert grouped_image_recall(vecs, ["a", "a", "c"], ks=(1,)) == {1: 0.0}
    assert grouped_image_recall(vecs, ["a", "a", "c"], ks=(2,)) == {2: 1.0}


def test_zero_shot_accuracy_by_hand():
    images = np.array([[1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)
    classes = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert zero_shot_accuracy(images, classes, [0, 1, 1], ks=(1,)) == {1: pytest.approx(2 / 3)}


def test_eval_of_a_trained_encoder(micro_encoder, small_manifest):
    cfg = EvalConfig(encoders=[str(micro_encoder)], data=small_manifest, caption_key="name",
                     label_keys=["category"], group_key="code", where={"vendor": "google"})
    rows, images = load_rows(cfg)
    assert {r["vendor"] for r in rows} == {"google"} and len(rows) == 48
    from training.encoder import load_encoder

    m = evaluate_encoder(load_encoder(micro_encoder), rows, images, cfg)
    assert {"text->image R@1", "image->text R@10", "zero-shot category top1 (9 classes)"} <= set(m)
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if "image->image" not in k)
    assert np.isnan(m["image->image R@1 (code)"])  # one vendor only: no code has a twin


def test_cli_compares_encoders_side_by_side(micro_encoder, small_manifest, tmp_path):
    out = tmp_path / "eval.json"
    other = tmp_path / "copy.safetensors"
    other.write_bytes(micro_encoder.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "training", "eval", "--encoder", str(micro_encoder), "--encoder", str(other),
         "--data", str(small_manifest), "--caption-key", "name", "--group-key", "code", "--label-key", "category",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert "micro.safetensors" in header and "copy.safetensors" in header
    results = json.loads(out.read_text())["results"]
    assert results[str(micro_encoder)] == results[str(other)]
    assert results[str(micro_encoder)]["image->image R@1 (code)"] >= 0.0
    assert "image->image R@10 (code)" in format_table(results)
