"""CLIP quality on the emoji data, trained on one vendor's artwork and judged on the other's.

For each vendor V: train with a recipe on V's images only, then on the *other*
vendor's images measure text->image R@1/R@10 and zero-shot accuracy on `category`
and `subcategory`, and over both vendors image->image R@1 where the hit is the same
emoji drawn by the other vendor. An untrained encoder of the same architecture
(the recipe with 0 steps) is the baseline row.

    python bench/clip_quality.py [--recipe training/recipes/emoji-cpu.json] [--steps N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, emoji_rows, save, write_jsonl

sys.path.insert(0, str(REPO))
from training.eval_clip import EvalConfig, run as evaluate  # noqa: E402

VENDORS = ("google", "twitter")


def train(manifest: Path, out: Path, recipe: Path, steps: int | None) -> float:
    cmd = [sys.executable, "-m", "training", "clip", "--recipe", str(recipe), "--data", str(manifest),
           "--image-key", "file", "--caption-key", "name", "--out", str(out), "--no-progress"]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=REPO / "training" / "recipes" / "emoji-cpu.json")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    a = p.parse_args()

    root, rows = emoji_rows()
    table: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        both = write_jsonl(tmp / "both.jsonl", rows)
        for vendor in VENDORS:
            other = VENDORS[1 - VENDORS.index(vendor)]
            train_manifest = write_jsonl(tmp / f"{vendor}.jsonl", [r for r in rows if r["vendor"] == vendor])
            encoders = {"untrained": tmp / f"untrained-{vendor}.safetensors",
                        f"trained on {vendor}": tmp / f"{vendor}.safetensors"}
            train(train_manifest, encoders["untrained"], a.recipe, 0)
            seconds[vendor] = train(train_manifest, encoders[f"trained on {vendor}"], a.recipe, a.steps)
            held_out = evaluate(EvalConfig(encoders=[str(e) for e in encoders.values()], data=both,
                                           caption_key="name", label_keys=["category", "subcategory"],
                                           where={"vendor": other}, ks=(1, 10)))
            cross = evaluate(EvalConfig(encoders=[str(e) for e in encoders.values()], data=both,
                                        group_key="code", ks=(1, 10)))
            for name, path in encoders.items():
                h, c = held_out[str(path)], cross[str(path)]
                table[f"{name} -> eval on {other}"] = {
                    "text->image R@1": h["text->image R@1"], "text->image R@10": h["text->image R@10"],
                    "image->image R@1 (other vendor)": c["image->image R@1 (code)"],
                    "zero-shot category": h["zero-shot category top1 (9 classes)"],
                    "zero-shot subcategory": next(v for k, v in h.items() if k.startswith("zero-shot subcategory top1")),
                }
    metrics = list(next(iter(table.values())))
    width = max(len(k) for k in table)
    print(f"data: {len(rows)} images from {root}; recipe {a.recipe.name}" + (f", {a.steps} steps" if a.steps else ""))
    print(f"{'encoder':<{width}}  " + "  ".join(f"{m:>{max(10, len(m))}}" for m in metrics))
    for name, vals in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{vals[m]:>{max(10, len(m))}.3f}" for m in metrics))
    path = save("clip_quality_emoji", {"command": " ".join(sys.argv), "recipe": a.recipe.name, "steps": a.steps,
                                       "train_seconds": seconds, "results": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
