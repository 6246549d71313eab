import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import faiss
import pytest
from PIL import Image

from index.catalog import Catalog
from index.job import BuildConfig, build
from index.verify import verify
from index.version import open_current
from tests.conftest import REPO, SAMPLE, copy_sample, sample_rows
from training.encoder import load_encoder


def _config(micro_encoder, source, tmp_path, url=None, **kw):
    return BuildConfig(encoder=str(micro_encoder), source=source, out=tmp_path / "index",
                       database_url=url or f"sqlite:///{tmp_path / 'catalog.db'}", workers=0, progress=False, **kw)


def test_build_indexes_every_image_and_catalog_agrees(micro_encoder, small_manifest, tmp_path):
    report = build(_config(micro_encoder, small_manifest, tmp_path))
    rows = [json.loads(line) for line in small_manifest.read_text().splitlines()]
    assert report.indexed == len(rows) and report.failures == []
    v = open_current(tmp_path / "index")
    enc = load_encoder(micro_encoder)
    assert v.fingerprint == enc.fingerprint and v.count == len(rows) and v.dim == enc.dim
    assert v.manifest.metric == "inner_product" and v.manifest.factory == "Flat"

    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert catalog.count("default") == len(rows)
    # Every vector id is a catalog row, and searching with an image finds that image's row first.
    ids = v.ids()
    items = catalog.get_many(ids)
    assert set(items) == set(ids.tolist())
    first = items[int(ids[0])]
    from PIL import Image

    _, found = v.search(enc.encode_images([Image.open(first.source)]), 1)
    assert int(found[0, 0]) == first.id
    assert first.meta["name"] == rows[0]["name"] and len(first.content_hash) == 64


def test_an_unchanged_rerun_publishes_nothing_and_a_rebuild_keeps_ids(micro_encoder, small_manifest, tmp_path):
    cfg = _config(micro_encoder, small_manifest, tmp_path)
    first = build(cfg)
    assert first.published == "built" and first.publish_detail == "no version published yet"
    ids_before = sorted(open_current(cfg.out).ids().tolist())
    second = build(cfg)
    assert second.published == "unchanged" and second.version == first.version
    third = build(replace(cfg, rebuild=True))
    ids_after = sorted(open_current(cfg.out).ids().tolist())
    assert third.published == "built" and third.version != first.version and ids_before == ids_after
    assert Catalog(cfg.database_url).count() == first.indexed


def test_bad_files_are_recorded_and_skipped(micro_encoder, odd_files, tmp_path):
    report = build(_config(micro_encoder, odd_files["good.png"].parent, tmp_path, max_pixels=10_000_000))
    skipped = {uri.rsplit("/", 1)[1]: reason.split(":")[0] for uri, reason in report.failures}
    assert skipped == {"truncated.png": "corrupt", "truncated.jpg": "corrupt", "zero.jpg": "empty",
                       "text.jpg": "not_an_image", "bomb.png": "too_many_pixels"}
    assert report.indexed == 5  # good, cmyk, sixteen, animated, rotated
    assert open_current(tmp_path / "index").manifest.failures == 5


def test_build_into_postgresql(micro_encoder, small_manifest, tmp_path, postgres_url):
    report = build(_config(micro_encoder, small_manifest, tmp_path, url=postgres_url, collection="pg-test"))
    assert Catalog(postgres_url).count("pg-test") == report.indexed > 0
    assert open_current(tmp_path / "index").manifest.catalog.startswith("postgresql+psycopg://postgres@")


def test_cli_build_and_info(micro_encoder, small_manifest, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "index", *args], cwd=REPO, capture_output=True, text=True)

    proc = run("build", "--encoder", str(micro_encoder), "--source", str(small_manifest),
               "--out", str(tmp_path / "idx"), "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "published" in proc.stdout and (tmp_path / "catalog.db").exists()
    info = json.loads(run("info", str(tmp_path / "idx")).stdout)
    assert info["ntotal"] == info["count"] > 0

    bad = run("build", "--encoder", str(tmp_path / "missing.safetensors"), "--source", str(small_manifest),
              "--out", str(tmp_path / "idx2"))
    assert bad.returncode == 2 and "encoder file not found" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("build", "--encoder", str(micro_encoder), "--source", str(small_manifest),
              "--out", str(tmp_path / "idx3"), "--factory", "Bogus")
    assert bad.returncode == 2 and "FAISS cannot build" in bad.stderr


def test_reruns_embed_only_what_is_new_or_changed(micro_encoder, tmp_path):
    rows = sample_rows()[:20]
    folder = copy_sample(rows[:16], tmp_path / "imgs")
    cfg = _config(micro_encoder, folder, tmp_path)
    first = build(cfg)
    assert (first.embedded, first.unchanged, first.indexed) == (16, 0, 16)
    again = build(cfg)
    assert (again.embedded, again.unchanged, again.indexed) == (0, 16, 16)

    changed = folder / f"{rows[0]['vendor']}-{rows[0]['code']}.png"
    shutil.copy(SAMPLE / rows[18]["file"], changed)  # new content under an old name
    shutil.copy(SAMPLE / rows[19]["file"], folder / "new.png")
    (folder / f"{rows[1]['vendor']}-{rows[1]['code']}.png").unlink()
    third = build(replace(cfg, delete_missing=True))
    assert (third.embedded, third.unchanged, third.deleted, third.indexed) == (2, 14, 1, 16)

    catalog = Catalog(cfg.database_url)
    assert catalog.count("default") == 16
    v = open_current(cfg.out)
    by_source = {item.source: item for item in catalog.get_many(v.ids()).values()}
    assert set(by_source) == {str(p) for p in folder.iterdir()}
    # the changed file is found by its new picture
    enc = load_encoder(micro_encoder)
    _, found = v.search(enc.encode_images([Image.open(SAMPLE / rows[18]["file"])]), 1)
    assert int(found[0, 0]) == by_source[str(changed)].id
    assert verify(cfg.out, cfg.database_url).ok


def test_two_sources_in_one_collection_leave_each_other_alone(micro_encoder, tmp_path):
    rows = sample_rows()[:12]
    one = copy_sample(rows[:6], tmp_path / "one")
    two = copy_sample(rows[6:], tmp_path / "two")
    shutil.copy(one / f"{rows[0]['vendor']}-{rows[0]['code']}.png", two / "also-in-one.png")
    first = build(_config(micro_encoder, one, tmp_path))
    assert (first.embedded, first.indexed) == (6, 6)
    # the second source with --delete-missing: deletes nothing of the first
    second = build(_config(micro_encoder, two, tmp_path, delete_missing=True))
    assert (second.embedded, second.deleted, second.indexed) == (7, 0, 13)
    (two / f"{rows[6]['vendor']}-{rows[6]['code']}.png").unlink()
    third = build(_config(micro_encoder, two, tmp_path, delete_missing=True))
    assert (third.deleted, third.indexed) == (1, 12)
    # a manifest that lists the first source's files does not take them over
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"file": str(p), "album": "m"}) + "\n" for p in sorted(one.iterdir())))
    fourth = build(_config(micro_encoder, manifest, tmp_path, delete_missing=True))
    assert (fourth.not_owned, fourth.embedded, fourth.deleted, fourth.indexed) == (6, 0, 0, 12)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        owners = {item.owner for item in catalog.get_many(open_current(tmp_path / "index").ids()).values()}
        assert owners == {f"source:{one.resolve()}", f"source:{two.resolve()}"}
        assert all("album" not in item.meta for item in catalog.get_many(range(1, 20)).values())
    finally:
        catalog.dispose()
    assert verify(tmp_path / "index", f"sqlite:///{tmp_path / 'catalog.db'}").ok


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_job_killed_at_a_random_moment_resumes_to_a_consistent_index(micro_encoder, small_manifest, tmp_path,
                                                                       seed):
    """kill -9 mid-run (after a random delay), then run again: one row and one vector per image."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    args = [sys.executable, "-m", "index", "build", "--encoder", str(micro_encoder), "--source", str(small_manifest),
            "--out", str(tmp_path / "idx"), "--database-url", url, "--batch-size", "4", "--workers", "0",
            "--no-progress"]
    rows = [json.loads(line) for line in small_manifest.read_text().splitlines()]
    rng = random.Random(seed)
    for attempt in range(5):  # a fast machine may finish the whole job before the kill: start afresh, kill sooner
        shutil.rmtree(tmp_path / "idx", ignore_errors=True)
        for leftover in tmp_path.glob("catalog.db*"):
            leftover.unlink()
        target = rng.randint(1, len(rows) // 2)  # kill once this many items are committed ...
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while _committed(tmp_path / "catalog.db") < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1) / 4**attempt)  # ... plus a random moment, often inside the next batch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = _committed(tmp_path / "catalog.db")
        if 0 < before < len(rows):
            break
    else:
        pytest.fail("the kill never landed mid-run")
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(rows) - before} embedded" in done.stdout and f"{before} unchanged" in done.stdout
    catalog = Catalog(url)
    assert catalog.count("default") == len(rows)
    assert len(catalog.sources("default")) == len(rows)
    report = verify(tmp_path / "idx", url)
    assert report.ok and report.index_count == report.catalog_count == len(rows)


def _committed(db: Path) -> int:
    """Items with vectors committed so far (0 before the schema exists)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def test_auto_choice_and_tuned_parameters_are_recorded(micro_encoder, small_manifest, tmp_path):
    report = build(_config(micro_encoder, small_manifest, tmp_path, factory="IVF4,Flat", target_recall=0.99))
    v = open_current(tmp_path / "index")
    assert v.manifest.factory == "IVF4,Flat" and v.manifest.choice.reason == "given"
    nprobe = v.manifest.search_params["nprobe"]
    assert v.manifest.tuning.recall >= 0.99 and 1 <= nprobe <= 4
    assert faiss.extract_index_ivf(v.index).nprobe == nprobe  # applied when the version is opened
    assert report.indexed == v.count


def test_two_ranks_under_torchrun_embed_halves_and_publish_one_version(micro_encoder, small_manifest, tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "index",
         "build", "--encoder", str(micro_encoder), "--source", str(small_manifest), "--out", str(tmp_path / "idx"),
         "--database-url", url, "--workers", "0", "--batch-size", "16", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = len(small_manifest.read_text().splitlines())
    assert f"rank 1 of 2: {n // 2} embedded" in proc.stdout
    assert f": {n} vectors; {n // 2} embedded" in proc.stdout  # rank 0 embedded the other half, then merged
    assert len(list((tmp_path / "idx" / "versions").iterdir())) == 1
    report = verify(tmp_path / "idx", url)
    assert report.ok and report.index_count == n


def test_near_duplicates_are_found_and_grouped(micro_encoder, tmp_path):
    rows = sample_rows()[:12]
    folder = copy_sample(rows, tmp_path / "imgs")
    shutil.copy(folder / f"{rows[0]['vendor']}-{rows[0]['code']}.png", folder / "copy-a1.png")
    shutil.copy(folder / f"{rows[0]['vendor']}-{rows[0]['code']}.png", folder / "copy-a2.png")
    shutil.copy(folder / f"{rows[5]['vendor']}-{rows[5]['code']}.png", folder / "copy-b.png")
    cfg = _config(micro_encoder, folder, tmp_path)
    build(cfg)
    out_json = tmp_path / "dups.json"
    proc = subprocess.run([sys.executable, "-m", "index", "duplicates", str(cfg.out), "--database-url",
                           cfg.database_url, "--threshold", "0.99999", "--json", str(out_json)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out_json.read_text())
    catalog = Catalog(cfg.database_url)
    by_id = {i: Path(s).name for s, i in catalog.sources("default").items()}
    named = [{by_id[g] for g in group} for group in report["groups"]]
    a = {f"{rows[0]['vendor']}-{rows[0]['code']}.png", "copy-a1.png", "copy-a2.png"}
    b = {f"{rows[5]['vendor']}-{rows[5]['code']}.png", "copy-b.png"}
    assert a in named and b in named  # byte-identical copies: one group each
    pairs = {frozenset((by_id[p["a"]], by_id[p["b"]])) for p in report["pairs"]}
    assert {frozenset(p) for p in [("copy-a1.png", "copy-a2.png"), tuple(b)]} <= pairs
    assert all(p["score"] >= 0.99999 for p in report["pairs"])
    assert "pairs at cosine >= 0.99999" in proc.stdout
