"""Self-supervised encoders judged fairly: trained without labels, evaluated on images they never saw.

``mnist``: each method trains with its CPU recipe (``training/recipes/mnist-<method>-cpu.json``)
on the *train* part of a seeded stratified split of MNIST-5k (``--holdout``; the labels pick the
split, training never reads them). ``python -m training eval --folder`` then measures k-NN and
linear-probe accuracy on the held-out part with the same split, next to a random-init encoder
(the same recipe, 0 steps) and raw pixels.

``emoji``: the settings of bench/clip_quality.py (``bench/emoji_quality.py``): (a) vendor held
out, both ways (train on one vendor's artwork, judge cross-vendor image->image R@1/R@10 on the
other's), (b) 20 % of the codes held out; one table with raw pixels, an untrained encoder, the SSL
default (``python -m training simclr --data F --out E`` with no other option) and one row per
ingredient changed from it (``ABLATIONS``), each a real run of the CLI with its wall and CPU seconds.

    python bench/ssl_quality.py mnist [--methods simclr moco rotnet] [--defaults]
    python bench/ssl_quality.py emoji [--rows "raw pixels" untrained "default recipe"] [--settings b] [--steps 150]
    python bench/ssl_quality.py emoji --gather RUN1 RUN2 --name NAME   # merge runs made side by side

Writes bench/results/<name>.json (+ .txt table, + .png chart when matplotlib is installed).
Wall times are on a shared machine: they vary with whatever else runs there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS, SHARED, save
from emoji_quality import REFERENCE_ROWS

sys.path.insert(0, str(REPO))


def train(method: str, args: list[str], out: Path, log: Path) -> float:
    """``python -m training METHOD ARGS --out OUT``; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "training", method, *args, "--out", str(out), "--log-file", str(log), "--no-progress"]
    print("$", " ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip().splitlines()[-1], f"({seconds:.0f} s wall)", flush=True)
    return seconds


def evaluate(cfg, name: str, title: str) -> dict:
    from training.eval_clip import format_table, plot, run

    results = run(cfg)
    table = format_table(results)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.txt").write_text(table + "\n")
    try:
        plot(results, RESULTS / f"{name}.png", title)
    except ImportError as exc:
        print(f"no chart: {exc}")
    return results


def mnist(a) -> None:
    from training.eval_clip import EvalConfig

    data = a.data or SHARED / "mnist-5k"
    split = ["--holdout", str(a.test_fraction), "--split-seed", str(a.split_seed)]
    encoders, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for method in a.methods:
            recipe = REPO / "training" / "recipes" / f"mnist-{method}-cpu.json"
            # --defaults: the method as `python -m training METHOD --data F --out E` runs it (on the train split);
            # else its recipe, whose monitor's query part of --val-folder is the held-out split
            base = ["--data", str(data), *split] if a.defaults else [
                "--recipe", str(recipe), "--data", str(data), *split, "--val-folder", str(data),
                "--val-fraction", str(a.test_fraction)]
            kept = RESULTS.parent / "encoders" / f"mnist-{method}.safetensors"
            out = kept if a.keep else tmp / f"{method}.safetensors"
            log = tmp / f"{method}.jsonl"
            seconds = train(method, [*base, *a.extra], out, log)
            history = [json.loads(line) for line in log.read_text().splitlines()]
            runs[method] = {"recipe": "CLI defaults" if a.defaults else str(recipe.relative_to(REPO)),
                            "wall_seconds": round(seconds, 1),
                            "train_seconds": history[-1]["elapsed_s"] if history else 0.0,
                            "steps": history[-1]["step"] if history else 0, "final_loss": history[-1]["loss"],
                            "monitor": [_monitored(r) for r in history if any(k.startswith("val/") for k in r)]}
            encoders.append(out)
        random_init = tmp / "random-init.safetensors"
        first = a.methods[0]
        base = ["--data", str(data), *split] if a.defaults else [
            "--recipe", str(REPO / "training" / "recipes" / f"mnist-{first}-cpu.json"), "--data", str(data), *split]
        train(first, [*base, "--steps", "0", "--eval-every", "0"], random_init, tmp / "random.jsonl")
        encoders.append(random_init)
        cfg = EvalConfig(encoders=[str(e) for e in encoders], data=None, folder=data, test_fraction=a.test_fraction,
                         split_seed=a.split_seed, knn_ks=(20, 200), pixels=True)
        results = evaluate(cfg, a.name, "MNIST-5k, held-out 20 %: k-NN and linear probe")
    save(a.name, {
        "command": "ssl_quality.py " + " ".join(sys.argv[1:]),
        "data": str(data), "split": {"test_fraction": a.test_fraction, "seed": a.split_seed},
        "runs": runs,
        "results": {_name(k): v for k, v in results.items()},
    })


# name -> extra options of the SSL default's command (None: raw pixels, the size in the name)
ROWS: dict[str, list[str] | None] = dict(REFERENCE_ROWS)
ABLATIONS: dict[str, list[str]] = {
    "- 1000 steps: 500 (--steps 500)": ["--steps", "500"],
    "+ flips, 500 steps (--flip-prob 0.5 --steps 500; the previous default)": ["--flip-prob", "0.5", "--steps", "500"],
    "- 2x2 grid, + flips, 500 steps: global average pooling (--backbone small-cnn --flip-prob 0.5 --steps 500)": [
        "--backbone", "small-cnn", "--flip-prob", "0.5", "--steps", "500"],
    "+ 4x4 grid, 2,048 wide (--backbone small-cnn,grid=4)": ["--backbone", "small-cnn,grid=4"],
    "temperature 0.5 (--temperature 0.5)": ["--temperature", "0.5"],
    "mild augmentation (crops >= 0.6, brightness/contrast only, no flips)": [
        "--min-scale", "0.6", "--no-colour-jitter", "--grayscale-prob", "0", "--flip-prob", "0"],
    "colours kept (--no-colour-jitter --grayscale-prob 0)": ["--no-colour-jitter", "--grayscale-prob", "0"],
    "4-block CNN (--backbone small-cnn,depth=4,grid=2)": ["--backbone", "small-cnn,depth=4,grid=2"],
}


def emoji(a) -> None:
    from emoji_quality import SETTINGS, Bench, choose, format_table

    def command(manifest: Path, out: Path, extra: list[str]) -> list[str]:
        return [sys.executable, "-m", "training", a.method, "--data", str(manifest), "--out", str(out),
                "--no-progress", *extra, *a.extra]

    rows = {**ROWS, **ABLATIONS}
    bench = Bench(rows, command, f"emoji {a.method}: (a) vendor held out both ways, (b) 20 % of concepts held out")
    if a.gather:
        table = bench.gather(a.gather, a.name)
    else:
        table = bench.run(choose(rows, a.rows), a.settings, a.steps, a.name, a.merge)
    print(format_table(table, [s for s in SETTINGS if any(s in per for per in table.values())]))


def _monitored(record: dict) -> dict:
    return {k: v for k, v in record.items() if k in ("step", "elapsed_s") or k.startswith("val/")}


def _name(spec: str) -> str:
    return Path(spec).stem if spec != "pixels" else spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    m = sub.add_parser("mnist")
    m.add_argument("--data", type=Path, default=None, help="labelled folder (default: ../shared/datasets/mnist-5k)")
    m.add_argument("--methods", nargs="+", default=["simclr"], choices=["simclr", "moco", "rotnet"])
    m.add_argument("--test-fraction", type=float, default=0.2)
    m.add_argument("--split-seed", type=int, default=0)
    m.add_argument("--keep", action="store_true", help="keep the encoder files in bench/encoders/")
    m.add_argument("--defaults", action="store_true",
                   help="train with the CLI's defaults (no option but the data and its split) instead of the recipes")
    m.add_argument("--name", default="mnist_ssl_eval", help="results file name")
    e = sub.add_parser("emoji")
    e.add_argument("--method", default="simclr", choices=["simclr", "moco", "rotnet"])
    e.add_argument("--rows", nargs="*", default=None, help="row names (or prefixes) to run; default: all")
    e.add_argument("--settings", nargs="*", default=["a-google", "a-twitter", "b"],
                   choices=["a-google", "a-twitter", "b"])
    e.add_argument("--steps", type=int, default=None, help="override the default's steps (every trained row)")
    e.add_argument("--name", default="emoji_ssl_quality", help="results file name under bench/results/")
    e.add_argument("--merge", action="store_true", help="add to the rows already in bench/results/NAME.json")
    e.add_argument("--gather", nargs="+", metavar="RUN", help="train nothing: merge bench/results/RUN.json files "
                   "(runs made side by side, each with its own --name) into NAME")
    for q in (m, e):
        q.add_argument("extra", nargs="*", help="more training flags, after --")
    a = p.parse_args()
    (mnist if a.task == "mnist" else emoji)(a)


if __name__ == "__main__":
    main()
