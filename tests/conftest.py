"""Shared fixtures: the sample data, a tiny CLIP trained for a few steps, a throwaway PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "emoji"


def sample_rows() -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / "metadata.jsonl").read_text().splitlines() if line.strip()]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """A JSONL manifest whose ``file`` column is absolute (so it can live anywhere)."""
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "file": str(SAMPLE / row["file"])}) + "\n")
    return path


@pytest.fixture(scope="session")
def small_manifest(tmp_path_factory) -> Path:
    """96 sample emoji (48 emoji, both vendors), spread over the categories."""
    rows = sample_rows()
    codes = sorted({r["code"] for r in rows})[::8][:48]
    picked = [r for r in rows if r["code"] in set(codes)]
    return write_manifest(tmp_path_factory.mktemp("data") / "small.jsonl", picked)


@pytest.fixture(scope="session")
def micro_encoder(tmp_path_factory, small_manifest) -> Path:
    """A lookalike-micro CLIP trained for a few steps on the small manifest."""
    from training.loop import LoopConfig
    from training.methods.clip import ClipTrainConfig
    from training.runner import run

    out = tmp_path_factory.mktemp("encoder") / "micro.safetensors"
    run(ClipTrainConfig(
        data=small_manifest, out=out, image_key="file", caption_key="name", model="lookalike-micro",
        batch_size=32, workers=0, eval_limit=64, loop=LoopConfig(steps=5, warmup_steps=1, progress=False),
    ))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(encoder, index, database_url: str, timeout: float = 90.0,
                    settings: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m service`` (a real uvicorn) on a free loopback port; yields its base URL once healthy.
    ``settings`` become ``LOOKALIKE_*`` environment variables (e.g. {"reload_interval": "0.5"})."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({f"LOOKALIKE_{k.upper()}": v for k, v in (settings or {}).items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--encoder", str(encoder), "--index", str(index),
         "--database-url", database_url, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env={**env, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the service exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not come up within {timeout:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (so the exit status says so)
    assert proc.returncode in (0, -signal.SIGTERM), proc.stdout.read()


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on a loopback port, as the ``postgres`` user when run as root."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb) are required in CI")
        pytest.skip("PostgreSQL server binaries (initdb) not installed")
    # Not under pytest's tmp dir: that one is private to root, and the server runs as ``postgres``.
    base = Path(tempfile.mkdtemp(prefix="lookalike-pg-"))
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        shutil.chown(sockdir, "postgres")
    port = _free_port()
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(base / "log"), "-w", "-o",
                              f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def interrupt_at(monkeypatch, step: int) -> None:
    """Make every Trainer raise KeyboardInterrupt (as Ctrl-C would) just before optimiser step ``step``;
    the Trainer then writes its checkpoint and raises ``training.loop.Interrupted``."""
    from training import loop

    real_one_step = loop.Trainer._one_step

    def one_step_then_die(self, stream):
        if self.step == step:
            raise KeyboardInterrupt
        return real_one_step(self, stream)

    monkeypatch.setattr(loop.Trainer, "_one_step", one_step_then_die)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` every 0.1 s until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def copy_sample(rows: list[dict], folder: Path) -> Path:
    """Sample images copied into ``folder`` (created if needed) as VENDOR-CODE.png: a source a test may change."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        shutil.copy(SAMPLE / r["file"], folder / f"{r['vendor']}-{r['code']}.png")
    return folder
