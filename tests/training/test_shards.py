import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE, sample_rows
from training.shards import DecodePair, first_pairs, is_shards, shard_urls


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
    n = write_shards(folder, rows, per_shard=40, extra={
        "broken": {"png": b"\x89PNG\r\n\x1a\n not really", "txt": b"a broken picture"},
        "nocaption": {"png": (SAMPLE / rows[0]["file"]).read_bytes()},
    })
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


def test_bad_samples_are_counted_and_skipped(shards):
    folder, _, rows = shards
    decode = DecodePair("jpg;png", "txt", transform=lambda im: im.size, tokenizer=lambda texts: texts)
    images, captions = first_pairs(shard_urls(folder), decode, n=1000)
    assert captions == [r["name"] for r in rows]  # every good pair, in order; the two bad ones skipped
    assert decode.bad == 2


def test_training_streams_shards(shards, tmp_path):
    """The CLI trains from shards in DataLoader workers, learns, and writes a loadable encoder."""
    folder, _, _ = shards
    out, log = tmp_path / "s.safetensors", tmp_path / "log.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "clip", "--data", f"{folder}/shard-{{000..002}}.tar",
         "--image-key", "png", "--caption-key", "txt", "--out", str(out), "--model", "lookalike-micro",
         "--batch-size", "32", "--steps", "40", "--lr", "2e-3", "--warmup", "5", "--workers", "2",
         "--log-every", "5", "--log-file", str(log), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 shards" in proc.stdout
    history = [json.loads(line) for line in log.read_text().splitlines()]
    assert history[-1]["step"] == 40 and history[-1]["loss"] < history[0]["loss"] - 0.3
    from training.encoder import load_encoder, read_metadata

    assert load_encoder(out).can_encode_text
    run = read_metadata(out)["run"]
    assert run["shards"] == 3 and run["text_to_image_recall"]["images"] == 96
    assert run["text_to_image_recall"]["trained"]["5"] > run["text_to_image_recall"]["untrained"]["5"]
