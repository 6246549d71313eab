import json
import subprocess
import sys

import pytest

from core.shards import shard_urls
from tests.conftest import REPO, SAMPLE, sample_rows
from tests.core.test_shards import write_shards
from training.shards import DecodePair, first_pairs


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    rows = sample_rows()[:96]
    folder = tmp_path_factory.mktemp("shards")
    n = write_shards(folder, rows, per_shard=40, extra={
        "broken": {"png": b"\x89PNG\r\n\x1a\n not really", "txt": b"a broken picture"},
        "nocaption": {"png": (SAMPLE / rows[0]["file"]).read_bytes()},
    })
    return folder, n, rows


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
