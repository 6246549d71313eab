import json
import subprocess
import sys


from index.build import BuildConfig, build
from index.catalog import Catalog
from index.version import open_current
from tests.conftest import REPO
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
    assert v.manifest["metric"] == "inner_product" and v.manifest["factory"] == "Flat"

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


def test_rebuild_keeps_ids_and_publishes_a_new_version(micro_encoder, small_manifest, tmp_path):
    cfg = _config(micro_encoder, small_manifest, tmp_path)
    first = build(cfg)
    ids_before = sorted(open_current(cfg.out).ids().tolist())
    second = build(cfg)
    ids_after = sorted(open_current(cfg.out).ids().tolist())
    assert second.version != first.version and ids_before == ids_after
    assert Catalog(cfg.database_url).count() == first.indexed


def test_bad_files_are_recorded_and_skipped(micro_encoder, odd_files, tmp_path):
    report = build(_config(micro_encoder, odd_files["good.png"].parent, tmp_path, max_pixels=10_000_000))
    skipped = {uri.rsplit("/", 1)[1]: reason.split(":")[0] for uri, reason in report.failures}
    assert skipped == {"truncated.png": "corrupt", "zero.jpg": "empty", "text.jpg": "not_an_image",
                       "bomb.png": "too_many_pixels"}
    assert report.indexed == 5  # good, cmyk, sixteen, animated, rotated
    assert open_current(tmp_path / "index").manifest["failures"] == 4


def test_build_into_postgresql(micro_encoder, small_manifest, tmp_path, postgres_url):
    report = build(_config(micro_encoder, small_manifest, tmp_path, url=postgres_url, collection="pg-test"))
    assert Catalog(postgres_url).count("pg-test") == report.indexed > 0
    assert open_current(tmp_path / "index").manifest["catalog"].startswith("postgresql+psycopg://postgres@")


def test_cli_build_and_info(micro_encoder, small_manifest, tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "index", *args], cwd=REPO,
                                       capture_output=True, text=True)
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
