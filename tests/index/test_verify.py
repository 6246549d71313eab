"""``python -m index verify`` finds where index and catalog disagree; a delete publishes a version that agrees."""

import subprocess
import sys

from index.catalog import Catalog
from index.job import BuildConfig, build
from index.verify import verify
from index.version import open_current
from tests.conftest import REPO


def _config(micro_encoder, source, tmp_path):
    return BuildConfig(encoder=str(micro_encoder), source=source, out=tmp_path / "index",
                       database_url=f"sqlite:///{tmp_path / 'catalog.db'}", workers=0, progress=False)


def test_verify_finds_disagreement_and_delete_publishes_a_clean_version(micro_encoder, small_manifest, tmp_path):
    cfg = _config(micro_encoder, small_manifest, tmp_path)
    build(cfg)
    ids = sorted(open_current(cfg.out).ids().tolist())
    Catalog(cfg.database_url).delete("default", ids[:2])  # behind the index's back
    bad = verify(cfg.out, cfg.database_url)
    assert not bad.ok and bad.not_in_catalog == ids[:2] and bad.missing_from_index == []

    def run(*a):
        return subprocess.run([sys.executable, "-m", "index", *a], cwd=REPO, capture_output=True, text=True)

    proc = run("verify", str(cfg.out), "--database-url", cfg.database_url)
    assert proc.returncode == 1 and "MISMATCH" in proc.stdout
    proc = run("delete", str(cfg.out), "--encoder", str(micro_encoder), "--database-url", cfg.database_url,
               "--id", str(ids[2]), "--id", "999999")
    assert proc.returncode == 0, proc.stderr
    assert "deleted 1 items" in proc.stdout and "999999" in proc.stdout
    after = open_current(cfg.out)
    assert sorted(after.ids().tolist()) == ids[3:]
    proc = run("verify", str(cfg.out), "--database-url", cfg.database_url)
    assert proc.returncode == 0 and "ok:" in proc.stdout
