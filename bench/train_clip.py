"""Seconds per CLIP training step: this project's trainer against open_clip_train, same everything.

Both run in their own process on the same model, batch size, data (a CSV/JSONL of
the emoji images), worker count, precision and optimiser settings; each logs every
step, and the median step time after a warm-up is compared. ratio = ours / theirs
(below 1.0: ours is faster).

On a CPU the two run at the same time (``--mode concurrent``, the default there), each pinned
to its own half of the cores with as many threads, swapping the halves every round (an even
number of rounds); the ratio is the geometric mean of the rounds' ratios. A shared machine's speed drifts by tens of
percent within minutes, and one core may be slower than the other; running side by side
makes both trainers see the same drift, and swapping cancels the cores' difference.
``--mode interleaved`` runs them one after the other on the whole machine (ours, theirs,
ours, ...), as on a single GPU.

    pip install -e '.[bench]'          # pandas, which open_clip_train's CSV reader needs
    python bench/train_clip.py [--model lookalike-tiny] [--batch-size 128] [--steps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import REPO, emoji_rows, median_after, save, write_jsonl

RUN_OPEN_CLIP = "import sys, training.clip_model; from open_clip_train.main import main; main(sys.argv[1:])"


def ours(manifest: Path, out: Path, a) -> tuple[list[str], Callable[[subprocess.CompletedProcess], list[float]]]:
    """Our trainer's command line, and how to read its step times once it has run."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ours.jsonl"
    cmd = [sys.executable, "-m", "training", "clip", "--data", str(manifest), "--image-key", "file",
           "--caption-key", "name", "--out", str(out / "ours.safetensors"), "--model", a.model,
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--workers", str(a.workers),
           "--lr", "5e-4", "--warmup", "5", "--weight-decay", "0.2", "--precision", a.precision,
           "--grad-clip", "0",  # open_clip_train clips only when asked (--grad-clip-norm)
           "--device", a.device, "--log-every", "1", "--log-file", str(log), "--no-progress"]

    def steps(proc: subprocess.CompletedProcess) -> list[float]:
        if proc.returncode != 0:
            raise SystemExit(f"our trainer failed:\n{proc.stderr[-3000:]}")
        elapsed = [json.loads(line)["elapsed_s"] for line in log.read_text().splitlines()]
        return [b - a_ for a_, b in zip([0.0] + elapsed[:-1], elapsed)]

    return cmd, steps


def theirs(csv_path: Path, out: Path, a) -> tuple[list[str], Callable[[subprocess.CompletedProcess], list[float]]]:
    """open_clip_train's command line, and how to read its step times once it has run."""
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

    def steps(proc: subprocess.CompletedProcess) -> list[float]:
        logs = "".join(p.read_text() for p in (out / "logs").rglob("out.log"))
        text = logs or proc.stdout + proc.stderr  # the same lines go to both; count them once
        times = [float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", text)]
        if proc.returncode != 0 or not times:
            raise SystemExit(f"open_clip_train failed:\n{text[-3000:]}")
        return times

    return cmd, steps


def run_alone(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def run_side_by_side(cmds: list[list[str]], core_sets: list[list[int]]) -> list[subprocess.CompletedProcess]:
    """Start every command at once, each (with its DataLoader workers) pinned to its own cores and
    using as many threads; wait for all. Output goes to files: a full pipe would stall a run."""
    with tempfile.TemporaryDirectory() as tmp:
        procs, files = [], []
        for i, (cmd, cores) in enumerate(zip(cmds, core_sets)):
            out, err = open(Path(tmp) / f"{i}.out", "w+"), open(Path(tmp) / f"{i}.err", "w+")
            files.append((out, err))
            env = dict(os.environ, OMP_NUM_THREADS=str(len(cores)))
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, text=True,
                                          preexec_fn=lambda cores=cores: os.sched_setaffinity(0, cores)))
        done = []
        for p, (out, err) in zip(procs, files):
            p.wait()
            out.seek(0), err.seek(0)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read()))
            out.close(), err.close()
        return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lookalike-tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=0,
                   help="steps of our trainer (0: as many as open_clip_train's one epoch, len(data) // batch)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", choices=["concurrent", "interleaved"], default=None,
                   help="side by side on halves of the cores, swapped each round (default on a CPU with 2+ "
                        "cores), or one after the other on the whole machine")
    p.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the median")
    p.add_argument("--repeats", type=int, default=2,
                   help="rounds; concurrent: the cores are swapped every round; interleaved: ours, theirs, ours, ...")
    p.add_argument("--name", default=None, help="results file name (default: train_clip_DEVICE)")
    a = p.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    a.mode = a.mode or ("concurrent" if a.device == "cpu" and len(cores) >= 2 else "interleaved")
    half = len(cores) // 2
    halves = [cores[:half], cores[half:2 * half]]  # equal halves (an odd core is left out)
    if a.mode == "concurrent" and a.repeats % 2:
        p.error("--mode concurrent needs an even --repeats: each pair of rounds swaps the halves")

    root, rows = emoji_rows()
    a.steps = a.steps or len(rows) // a.batch_size
    rounds = []  # per round: (our step times, theirs, our cores, theirs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = write_jsonl(tmp / "pairs.jsonl", rows)
        csv_path = tmp / "pairs.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "name"], delimiter="\t", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        for r in range(a.repeats):
            (cmd_o, steps_o) = ours(manifest, tmp / f"ours{r}", a)
            (cmd_t, steps_t) = theirs(csv_path, tmp / f"theirs{r}", a)
            if a.mode == "concurrent":
                mine, other = halves[r % 2], halves[1 - r % 2]
                proc_o, proc_t = run_side_by_side([cmd_o, cmd_t], [mine, other])
            else:
                mine = other = cores
                proc_o, proc_t = run_alone(cmd_o), run_alone(cmd_t)
            rounds.append((steps_o(proc_o), steps_t(proc_t), mine, other))
    # Steady-state steps: after each run's warm-up and before its last workers * prefetch_factor
    # (2) steps, whose batches were loaded ahead; at the end of open_clip_train's epoch its
    # workers are then idle and its steps run on an uncontended CPU (ours stream on).
    tail = 2 * a.workers

    def steady(run: list[float]) -> list[float]:
        return run[a.warmup_steps:len(run) - tail] or run

    t_ours = [t for o, _, _, _ in rounds for t in steady(o)]
    t_theirs = [t for _, t_, _, _ in rounds for t in steady(t_)]
    s_ours, s_theirs = median_after(t_ours, 0), median_after(t_theirs, 0)
    per_round, interval = None, None
    if a.mode == "concurrent":  # each round's ratio is of two runs that saw the same machine
        per_round = [statistics.median(steady(o)) / statistics.median(steady(t)) for o, t, _, _ in rounds]
        logs = [math.log(x) for x in per_round]
        ratio = math.exp(statistics.fmean(logs))
        spread = 2 * statistics.stdev(logs) / math.sqrt(len(logs))  # rounds are even, so at least 2
        interval = [ratio * math.exp(-spread), ratio * math.exp(spread)]  # +- 2 standard errors
    else:
        ratio = s_ours / s_theirs
    print(f"data: {len(rows)} pairs from {root}; model {a.model}, batch {a.batch_size}, {a.precision}, {a.device}; "
          f"{a.repeats} rounds, {a.mode}")
    if per_round:
        for (_, _, mine, other), x in zip(rounds, per_round):
            print(f"  round: ours on cores {mine}, open_clip_train on {other}: ratio {x:.3f}")
    print(f"{'trainer':<16}{'s/step (median)':>18}{'steps timed':>14}")
    print(f"{'lookalike':<16}{s_ours:>18.3f}{len(t_ours):>14}")
    print(f"{'open_clip_train':<16}{s_theirs:>18.3f}{len(t_theirs):>14}")
    how = "geometric mean of the rounds' ratios" if per_round else "ratio of the pooled medians"
    print(f"ratio lookalike / open_clip_train = {ratio:.3f}  ({how}; goal <= 1.0)")
    if interval:
        print(f"  +- 2 standard errors over the rounds: {interval[0]:.3f} .. {interval[1]:.3f}")
    path = save(a.name or f"train_clip_{a.device}", {
        "command": " ".join(sys.argv), "data": str(root), "pairs": len(rows), "args": vars(a),
        "seconds_per_step": {"lookalike": s_ours, "open_clip_train": s_theirs}, "ratio": ratio,
        "ratio_per_round": per_round, "ratio_interval_2se": interval,
        "cores_per_round": [{"lookalike": mine, "open_clip_train": other} for _, _, mine, other in rounds],
        "raw_step_seconds": {"lookalike": [o for o, _, _, _ in rounds],
                             "open_clip_train": [t for _, t, _, _ in rounds]},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
