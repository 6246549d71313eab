"""Seconds per CLIP training step: this project's trainer against open_clip_train, same everything.

Both run in their own process on the same model, batch size, data (a CSV/JSONL of
the emoji images), worker count, precision and optimiser settings; each logs every
step, and the median step time after a warm-up is compared. ratio = ours / theirs
(below 1.0: ours is faster).

    pip install -e '.[bench]'          # pandas, which open_clip_train's CSV reader needs
    python bench/train_clip.py [--model lookalike-tiny] [--batch-size 128] [--steps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, emoji_rows, median_after, save, write_jsonl

RUN_OPEN_CLIP = "import sys, training.clip_model; from open_clip_train.main import main; main(sys.argv[1:])"


def ours(manifest: Path, out: Path, a) -> list[float]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ours.jsonl"
    cmd = [sys.executable, "-m", "training", "clip", "--data", str(manifest), "--image-key", "file",
           "--caption-key", "name", "--out", str(out / "ours.safetensors"), "--model", a.model,
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--workers", str(a.workers),
           "--lr", "5e-4", "--warmup", "5", "--weight-decay", "0.2", "--precision", a.precision,
           "--grad-clip", "0",  # open_clip_train clips only when asked (--grad-clip-norm)
           "--device", a.device, "--log-every", "1", "--log-file", str(log), "--no-progress"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    elapsed = [json.loads(line)["elapsed_s"] for line in log.read_text().splitlines()]
    return [b - a_ for a_, b in zip([0.0] + elapsed[:-1], elapsed)]


def theirs(csv_path: Path, out: Path, a) -> list[float]:
    out.mkdir(parents=True, exist_ok=True)
    precision = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}[a.precision]
    cmd = [sys.executable, "-c", RUN_OPEN_CLIP, "--train-data", str(csv_path), "--dataset-type", "csv",
           "--csv-img-key", "file", "--csv-caption-key", "name", "--model", a.model,
           "--batch-size", str(a.batch_size), "--epochs", "1", "--workers", str(a.workers), "--lr", "5e-4",
           "--warmup", "5", "--wd", "0.2", "--precision", precision, "--log-every-n-steps", "1",
           "--logs", str(out / "logs"), "--name", "bench", "--report-to", "", "--save-frequency", "0",
           "--seed", "0"]  # a CSV epoch is the whole file: len(rows) // batch_size steps
    if a.device != "cpu":
        cmd += ["--device", a.device]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    logs = "".join(p.read_text() for p in (out / "logs").rglob("out.log"))
    text = logs or proc.stdout + proc.stderr  # the same lines go to both; count them once
    times = [float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", text)]
    if proc.returncode != 0 or not times:
        raise SystemExit(f"open_clip_train failed:\n{text[-3000:]}")
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lookalike-tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=25, help="steps of our trainer (open_clip_train runs one epoch)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the median")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each trainer, interleaved (ours, theirs, ours, ...), so drifting load hits both")
    a = p.parse_args()

    root, rows = emoji_rows()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = write_jsonl(tmp / "pairs.jsonl", rows)
        csv_path = tmp / "pairs.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "name"], delimiter="\t", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        runs_ours, runs_theirs = [], []
        for r in range(a.repeats):
            runs_ours.append(ours(manifest, tmp / f"ours{r}", a))
            runs_theirs.append(theirs(csv_path, tmp / f"theirs{r}", a))
    # Steady-state steps, pooled over the repeats: after each run's warm-up and before its
    # last workers * prefetch_factor (2) steps, whose batches were loaded ahead; at the end
    # of open_clip_train's epoch its workers are then idle and its steps run on an
    # uncontended CPU (ours stream on), which would favour it.
    tail = 2 * a.workers
    t_ours = [t for run in runs_ours for t in run[a.warmup_steps:len(run) - tail]]
    t_theirs = [t for run in runs_theirs for t in run[a.warmup_steps:len(run) - tail]]
    s_ours, s_theirs = median_after(t_ours, 0), median_after(t_theirs, 0)
    ratio = s_ours / s_theirs
    print(f"data: {len(rows)} pairs from {root}; model {a.model}, batch {a.batch_size}, {a.precision}, {a.device}")
    print(f"{'trainer':<16}{'s/step (median)':>18}{'steps timed':>14}")
    print(f"{'lookalike':<16}{s_ours:>18.3f}{len(t_ours):>14}")
    print(f"{'open_clip_train':<16}{s_theirs:>18.3f}{len(t_theirs):>14}")
    print(f"ratio lookalike / open_clip_train = {ratio:.3f}  (goal <= 1.0)")
    path = save(f"train_clip_{a.device}", {
        "command": " ".join(sys.argv), "data": str(root), "pairs": len(rows), "args": vars(a),
        "seconds_per_step": {"lookalike": s_ours, "open_clip_train": s_theirs}, "ratio": ratio,
        "raw_step_seconds": {"lookalike": runs_ours, "open_clip_train": runs_theirs},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
