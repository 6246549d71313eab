"""Images per second of the whole indexing job against the encoder's bare forward pass.

Both sides use the same encoder and batch size in one run:

- job: ``index.job.build`` from a fresh catalog — read files, hash, decode and preprocess in
  DataLoader workers, encode, commit rows and vectors, build and publish the FAISS version;
- forward: the same images decoded and preprocessed beforehand (not timed), then only
  ``Encoder.encode_tensors`` over batches of the same size.

ratio = job / forward (goal >= 0.9: the pipeline keeps the model busy).

    python bench/index_throughput.py [--encoder FILE] [--model lookalike-tiny] [--batch-size 64] [--workers 0,2]

Without ``--encoder`` a randomly initialised encoder of ``--model`` is written to a temporary
file (the speed of a forward pass does not depend on the weights). The images are the full
emoji set when ``../shared/datasets/emoji`` exists, else the repository's sample.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    p.add_argument("--workers", default="0,2",
                   help="comma-separated DataLoader worker counts of the job, each timed (0: decode in-process)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (forward, then each job)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=0, help="use only this many images (0: all)")
    p.add_argument("--name", default="index_throughput_cpu")
    a = p.parse_args()
    worker_counts = [int(w) for w in a.workers.split(",")]

    import torch

    from core.malloc import retain_freed_memory
    from index.decode import open_image
    from index.job import BuildConfig, build
    from training.encoder import load_encoder

    retain_freed_memory()  # as `python -m index build` does

    root, rows = emoji_rows()
    if a.limit:
        rows = rows[: a.limit]
    n = len(rows)
    forward_s: list[float] = []
    job_s: dict[int, list[float]] = {w: [] for w in worker_counts}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = a.encoder or str(random_encoder(a.model, tmp / "encoder.safetensors"))
        encoder = load_encoder(spec, a.device)
        manifest = write_jsonl(tmp / "images.jsonl", rows)

        # Decoding and preprocessing alone, in this process (one core): what the job adds to the forward pass.
        started = time.perf_counter()
        # as the job does it: 8-bit pixels per image, then float conversion and normalisation per batch
        pixels = torch.stack([encoder.image_pixels(open_image(Path(r["file"]))) for r in rows])
        tensors = torch.cat([encoder.tensors_from_pixels(pixels[i:i + a.batch_size])
                             for i in range(0, n, a.batch_size)])
        decode_s = time.perf_counter() - started
        encoder.batch_size = a.batch_size
        encoder.encode_tensors(tensors[: a.batch_size])  # warm-up

        for r in range(a.repeats):
            # the reference: forward passes only, on the tensors decoded above
            started = time.perf_counter()
            for i in range(0, n, a.batch_size):
                encoder.encode_tensors(tensors[i:i + a.batch_size])
            forward_s.append(time.perf_counter() - started)
            for w in worker_counts:
                run = tmp / f"run{r}-{w}"
                started = time.perf_counter()
                report = build(BuildConfig(encoder=spec, source=manifest, out=run / "index",
                                           database_url=f"sqlite:///{run / 'catalog.db'}", batch_size=a.batch_size,
                                           workers=w, device=a.device, progress=False), encoder=encoder)
                job_s[w].append(time.perf_counter() - started)
                assert report.indexed == n, (report.indexed, n, report.failures[:3])

    fwd = statistics.median(forward_s)
    threads = torch.get_num_threads()
    # On a CPU the forward pass and the decoding share the cores: even packed perfectly, the job
    # needs (threads * forward + decode) / cores seconds. (With the model on a GPU, decoding
    # overlaps it on the CPU cores and this bound does not apply.)
    cores = os.cpu_count() or 1
    ceiling = fwd / max(fwd, (threads * fwd + decode_s) / cores) if a.device == "cpu" else 1.0
    jobs = {w: statistics.median(v) for w, v in job_s.items()}
    best = min(jobs, key=jobs.get)
    result = {
        "command": "index_throughput.py " + " ".join(sys.argv[1:]),
        "images": n, "data": str(root), "encoder": a.encoder or f"random {a.model}",
        "batch_size": a.batch_size, "device": a.device, "torch_threads": threads, "cores": cores,
        "repeats": a.repeats,
        "images_per_second": {"forward_only": n / fwd, **{f"job_workers_{w}": n / s for w, s in jobs.items()}},
        "seconds": {"forward_only": forward_s, "decode_one_core": decode_s,
                    **{f"job_workers_{w}": v for w, v in job_s.items()}},
        "ratio": {f"workers_{w}": fwd / s for w, s in jobs.items()},
        "best_workers": best, "best_ratio": fwd / jobs[best],
        "cpu_ceiling": ceiling,
    }
    path = save(a.name, result)
    print(f"{n} images, batch {a.batch_size}, {a.device}, {threads} torch threads, {cores} cores; "
          f"medians of {a.repeats} interleaved rounds")
    print(f"forward pass only: {n / fwd:.1f} img/s; decoding alone: {n / decode_s:.1f} img/s on one core")
    for w, s in jobs.items():
        print(f"job, {w} workers: {n / s:.1f} img/s, ratio {fwd / s:.2f}")
    if a.device == "cpu":
        print(f"ceiling of the ratio when decoding and the forward pass share these {cores} cores: {ceiling:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
