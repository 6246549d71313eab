"""CLIP quality on the emoji data, judged on artwork or concepts that training never saw.

The settings (``bench/emoji_quality.py``): (a) vendor held out, both ways: train on one vendor's
artwork, judge cross-vendor image->image recall, text->image recall and zero-shot category /
subcategory on the other vendor's; (b) concepts held out: train on both vendors minus a fixed 20 %
of emoji codes, judge the same among those codes.

Rows: raw pixels (16 px, as the issue's reference, and at the encoder's 32 px input), an untrained
encoder (the default architecture, 0 steps), the default recipe (``python -m training clip`` with no
option but data and columns), and one row per ingredient removed from it (``ABLATIONS``). Every
trained row is a real run of the CLI; its wall and CPU (user + sys) seconds are recorded.

    python bench/clip_quality.py                       # everything (about 2 h on 2 CPU cores)
    python bench/clip_quality.py --rows default --settings b a-google
    python bench/clip_quality.py --steps 300 --name clip_quality_300
    python bench/clip_quality.py --gather RUN1 RUN2 --name NAME   # merge runs made side by side

Writes bench/results/<name>.json, .txt (the table) and .png (a chart).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emoji_quality import REFERENCE_ROWS, SETTINGS, Bench, choose, format_table

# name -> extra CLI options on top of the default recipe (None: not trained)
ROWS: dict[str, list[str] | None] = dict(REFERENCE_ROWS)
PREVIOUS_TOWER = ["--image-backbone", "small-cnn,width=32,depth=4"]  # global average pooling
ABLATIONS: dict[str, list[str]] = {
    "- 800 steps: 400 (--steps 400)": ["--steps", "400"],
    "- 4x4 grid, 400 steps: global pooling (the previous default)": [*PREVIOUS_TOWER, "--steps", "400"],
    "+ strong style augmentation, 400 steps (crops >= 0.35, hue, saturation, 20 % grayscale)": [
        "--min-scale", "0.35", "--colour-jitter", "--grayscale-prob", "0.2", "--steps", "400"],
    "- 4x4 grid, + strong augmentation, 400 steps (the default before that)": [
        *PREVIOUS_TOWER, "--min-scale", "0.35", "--colour-jitter", "--grayscale-prob", "0.2", "--steps", "400"],
    "- image-only SupCon term (--ssl-weight 0)": ["--ssl-weight", "0"],
    "+ SupCon term on the image embedding, no head (--ssl-on embedding)": ["--ssl-on", "embedding"],
    "+ SupCon on the embedding, weighing twice (--ssl-on embedding --ssl-weight 2)": [
        "--ssl-on", "embedding", "--ssl-weight", "2"],
    "- multi-positive (--no-multi-positive)": ["--no-multi-positive"],
    "- style augmentation (--no-augment)": ["--no-augment"],
    "- CNN tower: 4-layer ViT (--model lookalike-tiny)": ["--model", "lookalike-tiny"],
    "plain CLIP: 1 view, ClipLoss (--views 1)": ["--views", "1"],
}


def command(manifest: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "training", "clip", "--data", str(manifest), "--image-key", "file",
            "--caption-key", "name", "--out", str(out), "--no-progress", *extra]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=None,
                   help="row names (or prefixes) to run; default: all, ablations included")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--steps", type=int, default=None, help="override the default recipe's steps (every trained row)")
    p.add_argument("--name", default="clip_quality", help="results file name under bench/results/")
    p.add_argument("--merge", action="store_true", help="add to the rows already in bench/results/NAME.json")
    p.add_argument("--gather", nargs="+", metavar="RUN", help="train nothing: merge bench/results/RUN.json files "
                   "(runs made side by side, each with its own --name) into NAME")
    a = p.parse_args()
    rows = {**ROWS, **ABLATIONS}
    bench = Bench(rows, command, "emoji CLIP: (a) vendor held out both ways, (b) 20 % of concepts held out")
    if a.gather:
        table = bench.gather(a.gather, a.name)
    else:
        table = bench.run(choose(rows, a.rows), a.settings, a.steps, a.name, a.merge)
    print(format_table(table, [s for s in SETTINGS if any(s in per for per in table.values())]))


if __name__ == "__main__":
    main()
