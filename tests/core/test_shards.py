"""Shard specs: a folder of tars, a brace pattern or one tar; every named shard must exist."""

import io
import tarfile
from pathlib import Path

import pytest

from core.shards import is_shards, shard_urls
from tests.conftest import REPO, SAMPLE, sample_rows


def write_shards(folder: Path, rows: list[dict], per_shard: int, extra: dict[str, dict[str, bytes]] | None = None):
    """webdataset shards of (png, txt) pairs; ``extra`` adds more samples (key -> members) to the last shard."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [rows[i:i + per_shard] for i in range(0, len(rows), per_shard)]
    for n, chunk in enumerate(chunks):
        samples = {f"{n:03d}{i:04d}": {"png": (SAMPLE / r["file"]).read_bytes(), "txt": r["name"].encode()}
                   for i, r in enumerate(chunk)}
        if n == len(chunks) - 1:
            samples.update(extra or {})
        with tarfile.open(folder / f"shard-{n:03d}.tar", "w") as tar:
            for key, members in samples.items():
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return len(chunks)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    rows = sample_rows()[:96]
    folder = tmp_path_factory.mktemp("shards")
    n = write_shards(folder, rows, per_shard=40)
    return folder, n, rows


def test_shard_specs(shards):
    folder, n, _ = shards
    assert n == 3
    assert is_shards(folder) and is_shards(f"{folder}/shard-{{000..002}}.tar") and is_shards(folder / "shard-000.tar")
    assert not is_shards(REPO / "samples" / "emoji" / "metadata.jsonl")
    assert shard_urls(folder) == shard_urls(f"{folder}/shard-{{000..002}}.tar") == [
        str(folder / f"shard-{i:03d}.tar") for i in range(3)]
    with pytest.raises(FileNotFoundError, match="1 of 4 shards"):
        shard_urls(f"{folder}/shard-{{000..003}}.tar")
