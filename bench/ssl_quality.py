"""Self-supervised encoders judged fairly: trained without labels, evaluated on images they never saw.

``mnist``: each method trains with its CPU recipe (``training/recipes/mnist-<method>-cpu.json``)
on the *train* part of a seeded stratified split of MNIST-5k (``--holdout``; the labels pick the
split, training never reads them). ``python -m training eval --folder`` then measures k-NN and
linear-probe accuracy on the held-out part with the same split, next to a random-init encoder
(the same recipe, 0 steps) and raw pixels.

``emoji``: each method trains on one vendor's artwork (google) and is judged by cross-vendor
image->image recall over both vendors (a hit is the same emoji ``code`` drawn by the other
vendor), next to a random-init encoder and raw pixels.

    python bench/ssl_quality.py mnist [--methods simclr moco rotnet]
    python bench/ssl_quality.py emoji [--methods simclr moco rotnet] [--steps 150]

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

from common import REPO, RESULTS, SHARED, emoji_rows, save, write_jsonl

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
            # the monitor's query part of --val-folder is the held-out split (same fraction and seed)
            base = ["--recipe", str(recipe), "--data", str(data), *split, "--val-folder", str(data),
                    "--val-fraction", str(a.test_fraction), *a.extra]
            out = RESULTS.parent / "encoders" / f"mnist-{method}.safetensors" if a.keep else tmp / f"{method}.safetensors"
            log = tmp / f"{method}.jsonl"
            seconds = train(method, base, out, log)
            history = [json.loads(line) for line in log.read_text().splitlines()]
            runs[method] = {"recipe": str(recipe.relative_to(REPO)), "wall_seconds": round(seconds, 1),
                            "train_seconds": history[-1]["elapsed_s"] if history else 0.0,
                            "steps": history[-1]["step"] if history else 0, "final_loss": history[-1]["loss"],
                            "monitor": [{k: v for k, v in r.items() if k in ("step", "elapsed_s") or k.startswith("val/")}
                                        for r in history if any(k.startswith("val/") for k in r)]}
            encoders.append(out)
        random_init = tmp / "random-init.safetensors"
        first = a.methods[0]
        train(first, ["--recipe", str(REPO / "training" / "recipes" / f"mnist-{first}-cpu.json"), "--data", str(data),
                      *split, "--steps", "0", "--eval-every", "0"], random_init, tmp / "random.jsonl")
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


def emoji(a) -> None:
    from training.eval_clip import EvalConfig

    root, rows = emoji_rows()
    encoders, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = write_jsonl(tmp / "emoji.jsonl", rows)
        common = ["--data", str(manifest), "--where", f"vendor={a.vendor}", "--image-size", "32",
                  "--backbone", a.backbone, "--batch-size", "128", "--workers", "2", "--channels-last",
                  "--lr", "2e-3", "--warmup", "15", "--log-every", "10"]
        per_method = {"simclr": ["--temperature", "0.2"], "moco": ["--temperature", "0.2", "--queue-size", "1024",
                                                                      "--momentum", "0.99"], "rotnet": []}
        if a.defaults:  # each method exactly as `python -m training METHOD --data F --out E` runs it
            common, per_method = ["--data", str(manifest), "--where", f"vendor={a.vendor}"], dict.fromkeys(per_method, [])
        steps = ["--steps", str(a.steps)] if a.steps else []
        for method in a.methods:
            out = tmp / f"{method}.safetensors"
            seconds = train(method, [*common, *per_method[method], *steps, *a.extra], out, tmp / f"{method}.jsonl")
            runs[method] = {"wall_seconds": round(seconds, 1), "steps": a.steps or "default",
                            "args": [*common, *per_method[method], *steps, *a.extra]}
            encoders.append(out)
        random_init = tmp / "random-init.safetensors"
        train(a.methods[0], [*common, "--steps", "0"], random_init, tmp / "random.jsonl")
        encoders.append(random_init)
        cfg = EvalConfig(encoders=[str(e) for e in encoders], data=manifest, group_key="code", pixels=True)
        results = evaluate(cfg, a.name, f"emoji: trained on {a.vendor} only; same code by the other vendor = hit")
        # the CLIP table's measure too: each vendor's images query the other vendor's only (clip_quality.py)
        from clip_quality import cross_vendor_recall, pixels
        from training.eval_clip import load_encoders, load_rows

        rows_, images = load_rows(cfg)
        for spec, encoder in {**load_encoders(cfg), "pixels 16 px": pixels(16)}.items():
            cross = cross_vendor_recall(encoder.encode_images(images), rows_)
            results.setdefault(spec, {}).update({f"other vendor's gallery: {k}": v for k, v in cross.items()})
            print(_name(spec), " ".join(f"{k} {v:.3f}" for k, v in cross.items()))
    save(a.name, {
        "command": "ssl_quality.py " + " ".join(sys.argv[1:]),
        "data": str(root), "images": len(rows), "trained_on": f"vendor={a.vendor}",
        "runs": runs,
        "results": {_name(k): v for k, v in results.items()},
    })


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
    m.add_argument("--name", default="mnist_ssl_eval", help="results file name")
    e = sub.add_parser("emoji")
    e.add_argument("--methods", nargs="+", default=["simclr", "moco", "rotnet"], choices=["simclr", "moco", "rotnet"])
    e.add_argument("--vendor", default="google", help="train on this vendor's artwork only")
    e.add_argument("--backbone", default="small-cnn")
    e.add_argument("--steps", type=int, default=None, help="training steps (default: 150, or with --defaults the CLI's)")
    e.add_argument("--defaults", action="store_true",
                   help="train with the CLI's defaults (no option but --data and --where) instead of the bench's")
    e.add_argument("--name", default="emoji_ssl_cross_vendor", help="results file name")
    for q in (m, e):
        q.add_argument("extra", nargs="*", help="more training flags, after --")
    a = p.parse_args()
    if a.task == "emoji" and a.steps is None and not a.defaults:
        a.steps = 150
    (mnist if a.task == "mnist" else emoji)(a)


if __name__ == "__main__":
    main()
