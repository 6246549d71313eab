"""webdataset tar shards as an index source: read in place, indexed, served back byte for byte."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from index.fetch import FetchError, read_bytes
from index.job import BuildConfig, build
from index.reader import read_source
from index.shards import read_member
from index.verify import verify
from tests.conftest import SAMPLE, sample_rows


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path) -> dict:
    """Two shards of sample emoji: image + json + txt per sample, plus a sample with no image and a
    corrupt image member in the second shard."""
    rows = sample_rows()[:12]
    folder = tmp_path / "shards"
    folder.mkdir()
    expected = {}
    for s, part in enumerate((rows[:6], rows[6:])):
        with tarfile.open(folder / f"{s:03d}.tar", "w") as tar:
            for i, r in enumerate(part):
                key = f"sub/{s:03d}{i:03d}"
                data = (SAMPLE / r["file"]).read_bytes()
                _add(tar, f"{key}.png", data)
                _add(tar, f"{key}.json", json.dumps({"code": r["code"], "vendor": r["vendor"]}).encode())
                _add(tar, f"{key}.txt", f"{r['name']}\n".encode())
                expected[key] = (data, r)
            if s == 1:
                _add(tar, "sub/orphan.json", b'{"no": "image"}')
                _add(tar, "sub/broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"pattern": f"{folder}/{{000..001}}.tar", "folder": folder, "expected": expected}


def test_samples_become_items_with_their_metadata_and_bytes(shards):
    items = list(read_source(shards["pattern"]))
    keys = [it.metadata["key"] for it in items]
    assert keys[:12] == list(shards["expected"]) and keys[12:] == ["sub/broken"]  # the orphan has no image
    for item in items[:12]:
        data, row = shards["expected"][item.metadata["key"]]
        assert item.uri.endswith(f".tar#{item.metadata['key']}.png")
        assert item.metadata["code"] == row["code"] and item.metadata["vendor"] == row["vendor"]
        assert item.metadata["caption"] == row["name"] and item.metadata["shard"] in ("000.tar", "001.tar")
        assert read_bytes(item.uri) == data  # read in place, no unpacking
    one_shard = list(read_source(shards["folder"] / "000.tar"))
    assert len(one_shard) == 6


def test_missing_members_and_shards_are_read_errors(shards):
    first = next(iter(read_source(shards["pattern"])))
    with pytest.raises(FetchError, match="unreadable"):
        read_bytes(first.uri.replace(".png", ".webp"))
    with pytest.raises(FileNotFoundError):
        read_member(str(shards["folder"] / "nope.tar#x.png"))
    with pytest.raises(FileNotFoundError, match="shards do not exist"):
        list(read_source(f"{shards['folder']}/{{000..003}}.tar"))


def test_a_changed_shard_is_read_afresh(shards):
    shard = shards["folder"] / "000.tar"
    before = read_member(f"{shard}#sub/000000.png")
    with tarfile.open(shard, "w") as tar:  # rewritten: other bytes at other offsets
        _add(tar, "sub/padding.bin", b"x" * 1000)
        _add(tar, "sub/000000.png", b"new bytes")
    assert read_member(f"{shard}#sub/000000.png") == b"new bytes" != before


def test_shards_are_indexed_and_served(shards, micro_encoder, tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    cfg = BuildConfig(encoder=str(micro_encoder), source=Path(shards["pattern"]), out=tmp_path / "index",
                      database_url=url, workers=2, progress=False)
    report = build(cfg)
    assert report.indexed == report.embedded == 12
    assert [(f[0].endswith("001.tar#sub/broken.jpg"), f[1].split(":")[0]) for f in report.failures] == [
        (True, "corrupt")]
    assert verify(tmp_path / "index", url).ok
    again = build(cfg)  # nothing new: the shard members are keyed like files
    assert again.embedded == 0 and again.unchanged == 12 and again.indexed == 12

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(encoder=str(micro_encoder), index=tmp_path / "index", database_url=url)
    with TestClient(create_app(settings)) as client:
        hits = client.post("/v1/search/text", json={"query": "face", "k": 12}).json()["results"]
        assert len(hits) == 12
        for hit in hits[:3]:
            data, row = shards["expected"][hit["metadata"]["key"]]
            r = client.get(hit["image_url"])
            assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == data
            assert hit["metadata"]["caption"] == row["name"]
