"""Images per second of the whole indexing job against the encoder's bare forward pass.

Both sides use the same encoder and batch size in one run:

- job: ``index.build.build`` from a fresh catalog — read files, hash, decode and preprocess in
  DataLoader workers, encode, commit rows and vectors, build and publish the FAISS version;
- forward: the same images decoded and preprocessed beforehand (not timed), then only
  ``Encoder.encode_tensors`` over batches of the same size.

ratio = job / forward (goal >= 0.9: the pipeline keeps the model busy).

    python bench/index_throughput.py [--encoder FILE] [--model lookalike-tiny] [--batch-size 64] [--workers 2]

Without ``--encoder`` a randomly initialised encoder of ``--model`` is written to a temporary
file (the speed of a forward pass does not depend on the weights). The images are the full
emoji set when ``../shared/datasets/emoji`` exists, else the repository's sample.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, emoji_rows, random_encoder, save, write_jsonl

sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=None)
    p.add_argument("--model", default="lookalike-tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=0, help="use only this many images (0: all)")
    p.add_argument("--name", default="index_throughput_cpu")
    a = p.parse_args()

    import torch

    from index.build import BuildConfig, build
    from index.decode import open_image
    from training.encoder import load_encoder

    root, rows = emoji_rows()
    if a.limit:
        rows = rows[: a.limit]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = a.encoder or str(random_encoder(a.model, tmp / "encoder.safetensors"))
        encoder = load_encoder(spec, a.device)
        manifest = write_jsonl(tmp / "images.jsonl", rows)

        # the reference: forward passes only, on tensors decoded and preprocessed beforehand
        tensors = torch.stack([encoder.image_tensor(open_image(Path(r["file"]))) for r in rows])
        encoder.batch_size = a.batch_size
        encoder.encode_tensors(tensors[: a.batch_size])  # warm-up
        started = time.perf_counter()
        for i in range(0, len(tensors), a.batch_size):
            encoder.encode_tensors(tensors[i:i + a.batch_size])
        forward_s = time.perf_counter() - started

        started = time.perf_counter()
        report = build(BuildConfig(encoder=spec, source=manifest, out=tmp / "index",
                                   database_url=f"sqlite:///{tmp / 'catalog.db'}", batch_size=a.batch_size,
                                   workers=a.workers, device=a.device, progress=False), encoder=encoder)
        job_s = time.perf_counter() - started
        assert report.indexed == len(rows), (report.indexed, len(rows), report.failures[:3])

    n = len(rows)
    result = {
        "command": "index_throughput.py " + " ".join(sys.argv[1:]),
        "images": n, "data": str(root), "encoder": a.encoder or f"random {a.model}",
        "batch_size": a.batch_size, "workers": a.workers, "device": a.device,
        "images_per_second": {"job": n / job_s, "forward_only": n / forward_s},
        "seconds": {"job": job_s, "forward_only": forward_s},
        "ratio": (n / job_s) / (n / forward_s),
    }
    path = save(a.name, result)
    print(f"{n} images: job {n / job_s:.1f} img/s, forward pass only {n / forward_s:.1f} img/s, "
          f"ratio {result['ratio']:.2f}\nwrote {path}")


if __name__ == "__main__":
    main()
