"""Real artefacts for the service tests: a micro CLIP trained for a few steps, an index built with it."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.schemas import ErrorResponse
from tests.conftest import SAMPLE, sample_rows, write_manifest

os.environ["HF_HUB_OFFLINE"] = "1"

ERROR_KEYS = {"code", "message", "detail"}


def assert_error(response, status: int, code: str) -> dict:
    """``response`` is the service's error shape with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    ErrorResponse.model_validate(body)  # the shape the OpenAPI schema documents
    json.dumps(error["detail"])
    return error


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=format)
    return buf.getvalue()


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, small_manifest, micro_encoder) -> dict:
    """The small manifest indexed with the micro encoder into a SQLite catalog."""
    from index.job import BuildConfig, build

    root = tmp_path_factory.mktemp("served")
    url = f"sqlite:///{root / 'catalog.db'}"
    report = build(BuildConfig(encoder=str(micro_encoder), source=small_manifest, out=root / "index",
                               database_url=url, workers=0, progress=False))
    assert report.indexed > 0 and not report.failures
    return {"encoder": str(micro_encoder), "index": root / "index", "database_url": url, "count": report.indexed}


@pytest.fixture(scope="session")
def make_settings(built_index):
    from service.settings import Settings

    def make(**overrides) -> Settings:
        base = {k: built_index[k] for k in ("encoder", "index", "database_url")}
        return Settings(**{**base, **overrides})

    return make


@pytest.fixture(scope="session")
def serve(make_settings):
    """``with serve(**settings_overrides) as client:`` a TestClient whose lifespan has run."""
    from service.app import create_app

    @contextmanager
    def run(raise_server_exceptions: bool = True, **overrides) -> Iterator[TestClient]:
        app = create_app(make_settings(**overrides))
        with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
            yield client

    return run


@pytest.fixture(scope="session")
def client(serve) -> Iterator[TestClient]:
    """One service with default limits, shared by the tests that do not change settings."""
    with serve() as c:
        yield c


@pytest.fixture(scope="session")
def indexed_rows(small_manifest) -> list[dict]:
    """The manifest rows the served index holds (``file`` absolute)."""
    return [json.loads(line) for line in small_manifest.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def sample_png(indexed_rows) -> Path:
    """An indexed image file (a 64x64 RGBA emoji PNG)."""
    return Path(indexed_rows[0]["file"])


@pytest.fixture(scope="session")
def perishable_index(tmp_path_factory, micro_encoder) -> dict:
    """Four images copied to a temp folder and indexed there, so that a test may delete a file."""
    from index.job import BuildConfig, build

    root = tmp_path_factory.mktemp("perishable")
    images = root / "images"
    images.mkdir()
    rows = []
    for row in sample_rows()[:4]:
        copy = images / Path(row["file"]).name
        shutil.copy(SAMPLE / row["file"], copy)
        rows.append({**row, "file": str(copy)})  # absolute: write_manifest keeps it
    manifest = write_manifest(root / "few.jsonl", rows)
    url = f"sqlite:///{root / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=manifest, out=root / "index", database_url=url,
                      workers=0, progress=False))
    return {"encoder": str(micro_encoder), "index": root / "index", "database_url": url, "images": images}


@pytest.fixture(scope="session")
def live_server(built_index) -> Iterator[str]:
    """``python -m service`` on a free loopback port (a real uvicorn); yields its base URL."""
    from tests.conftest import running_service

    with running_service(built_index["encoder"], built_index["index"], built_index["database_url"]) as base:
        yield base


@pytest.fixture(scope="session")
def other_encoder(tmp_path_factory, micro_encoder) -> Path:
    """The micro encoder with one weight nudged: same architecture, a different fingerprint."""
    from safetensors.torch import load_file

    from training.encoder import Preprocess, read_metadata, save_encoder

    meta = read_metadata(micro_encoder)
    weights = load_file(str(micro_encoder))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3 * torch.ones_like(weights[name])
    out = tmp_path_factory.mktemp("other") / "other.safetensors"
    fp = save_encoder(out, kind=meta["kind"], arch=meta["arch"], state_dict=weights,
                      preprocess=Preprocess(**meta["preprocess"]), dim=meta["dim"], tokenizer=meta["tokenizer"],
                      run=meta["run"])
    assert fp != meta["fingerprint"]
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path) -> str:
    """A new, empty catalog: an SQLite file, or a database of its own in the throwaway PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    import secrets

    from sqlalchemy import create_engine

    server = request.getfixturevalue("postgres_url")
    name = f"t_{secrets.token_hex(6)}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return f"{server.rsplit('/', 1)[0]}/{name}"


class Deployment:
    """What the README deploys, in small: a manifest of copied sample images indexed by a batch job into
    ``url``, and the service writing into the same catalog through the API (with a write key)."""

    def __init__(self, encoder: str, url: str, root: Path, rows: list[dict]) -> None:
        self.encoder, self.url, self.root, self.rows = encoder, url, root, rows
        self.images, self.index, self.uploads = root / "images", root / "index", root / "uploads"
        self.images.mkdir(parents=True, exist_ok=True)
        for r in rows:
            shutil.copy(SAMPLE / r["file"], self.path_of(r))
        self.manifest = root / "manifest.jsonl"
        self.write_manifest(rows)
        self._key: str | None = None

    def write_manifest(self, rows: list[dict]) -> None:
        with open(self.manifest, "w") as f:
            for r in rows:
                f.write(json.dumps({**r, "file": f"images/{self.path_of(r).name}"}) + "\n")

    def path_of(self, row: dict) -> Path:
        return self.images / f"{row['vendor']}-{row['code']}.png"

    def build(self, **overrides):
        from index.job import BuildConfig, build

        cfg = {"encoder": self.encoder, "source": self.manifest, "out": self.index, "database_url": self.url,
               "workers": 0, "progress": False, **overrides}
        return build(BuildConfig(**cfg))

    def settings(self, **overrides):
        from service.settings import Settings

        return Settings(**{"encoder": self.encoder, "index": self.index, "database_url": self.url,
                           "upload_dir": self.uploads, "publish_delay": 0.2, "reload_interval": 0.2, **overrides})

    @property
    def key(self) -> str:
        if self._key is None:
            from index.catalog import Catalog
            from service.keys import create_key

            catalog = Catalog(self.url)
            try:
                self._key, _ = create_key(catalog, "writer", ["read", "write"])
            finally:
                catalog.dispose()
        return self._key

    @contextmanager
    def serve(self, **overrides) -> Iterator[TestClient]:
        from service.app import create_app

        with TestClient(create_app(self.settings(**overrides)),
                        headers={"Authorization": f"Bearer {self.key}"}) as client:
            yield client


@pytest.fixture
def deployment(micro_encoder, catalog_url, tmp_path) -> Deployment:
    """Eight sample images (four emoji, both vendors) indexed once; see ``Deployment``."""
    rows = sample_rows()[:8]
    d = Deployment(str(micro_encoder), catalog_url, tmp_path / "deploy", rows)
    report = d.build()
    assert report.indexed == len(rows) and not report.failures
    return d
