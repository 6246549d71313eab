"""``python -m index build`` prints what a person needs: progress, one summary line, warnings; the
libraries' INFO chatter (alembic's plugin and migration lines) only with ``--verbose``."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, sample_rows, write_manifest


def build_output(tmp_path, encoder, *flags: str) -> list[str]:
    manifest = write_manifest(tmp_path / "few.jsonl", sample_rows()[:6])
    proc = subprocess.run(
        [sys.executable, "-m", "index", *flags, "build", "--encoder", str(encoder), "--source", str(manifest),
         "--out", str(tmp_path / "index"), "--database-url", f"sqlite:///{tmp_path / 'catalog.db'}",
         "--workers", "0", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return (proc.stdout + proc.stderr).splitlines()


def test_build_is_quiet_by_default(tmp_path, micro_encoder):
    lines = build_output(tmp_path, micro_encoder)
    assert not [line for line in lines if "alembic" in line], lines
    assert [line for line in lines if line.startswith("built ") and "6 vectors" in line], lines  # the summary


def test_verbose_shows_the_libraries_logs(tmp_path, micro_encoder):
    lines = build_output(tmp_path, micro_encoder, "--verbose")
    assert any(line.startswith("INFO alembic.runtime.migration: Running upgrade") for line in lines), lines
