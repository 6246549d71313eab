"""The emoji held-out settings that bench/clip_quality.py and bench/ssl_quality.py judge encoders on.

Each setting is a train/judge split of ``../shared/datasets/emoji``:

(a) vendor held out (``a-google``, ``a-twitter``): train on one vendor's artwork, judge cross-vendor
    image->image R@1/R@10 (each image of one vendor queries the other vendor's images, the hit is
    the same emoji; mean of both directions; also R@1 among all images of both vendors, ``all@1``,
    where the query's own vendor's drawings are distractors too), and, for encoders with a text
    tower, text->image R@1/R@10 (query = name) and zero-shot category / subcategory on the vendor
    not trained on;
(b) concepts held out: train on both vendors minus a fixed 20 % of emoji codes (chosen by a seeded
    hash of the code, ``held_out``), judge the same measures among those codes only.

A bench names its rows (name -> extra CLI options, ``None`` for a raw-pixel row) and how one
training run is spelt (``Bench.command``); ``Bench.run`` trains each row on each setting with the
real CLI, records wall and CPU (user + sys) seconds, and writes bench/results/<name>.{json,txt,png}
after every run, so an interrupted bench keeps what it measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import REPO, RESULTS, emoji_rows, save, write_jsonl

sys.path.insert(0, str(REPO))
from training.baselines import pixel_encoder  # noqa: E402
from training.encoder import Preprocess, load_encoder  # noqa: E402
from training.eval_clip import DEFAULT_TEMPLATES, EvalConfig, evaluate_encoder, load_rows  # noqa: E402
from training.evaluate import recall_at_k  # noqa: E402

VENDORS = ("google", "twitter")
SETTINGS = ("a-google", "a-twitter", "b")
HOLDOUT_SEED = "lookalike-concepts-v1"
# the rows every quality table has: name -> extra options of the default's command (None: raw pixels,
# at the size in the name)
REFERENCE_ROWS: dict[str, list[str] | None] = {
    "raw pixels 16 px": None,
    "raw pixels 32 px": None,
    "untrained": ["--steps", "0"],
    "default recipe": [],
}
TITLES = {"a-google": "trained on google, judged on twitter (x-v: the other vendor's gallery; all: both vendors')",
          "a-twitter": "trained on twitter, judged on google (x-v: the other vendor's gallery; all: both vendors')",
          "b": "trained without the held-out 20 % of codes, judged on them"}
MEASURES = {"cross-vendor R@1": "x-v@1", "cross-vendor R@10": "x-v@10", "image->image R@1": "all@1",
            "text->image R@1": "t2i@1", "text->image R@10": "t2i@10", "zero-shot category": "zs-cat",
            "zero-shot subcategory": "zs-sub"}


def held_out(code: str) -> bool:
    """The fixed 20 % of emoji codes that setting (b) never trains on."""
    return int(hashlib.sha256(f"{HOLDOUT_SEED}:{code}".encode()).hexdigest(), 16) % 5 == 0


def splits(rows: list[dict]) -> dict[str, tuple[list[dict], list[dict], list[dict]]]:
    """setting -> (training rows, rows judged for text / zero-shot, rows judged for image->image)."""
    out = {}
    for vendor in VENDORS:
        other = VENDORS[1 - VENDORS.index(vendor)]
        out[f"a-{vendor}"] = ([r for r in rows if r["vendor"] == vendor], [r for r in rows if r["vendor"] == other],
                              rows)
    unseen = [r for r in rows if held_out(r["code"])]
    out["b"] = ([r for r in rows if not held_out(r["code"])], unseen, unseen)
    return out


def cross_vendor_recall(vecs: np.ndarray, rows: list[dict], ks=(1, 10)) -> dict[str, float]:
    """Each image of one vendor queries the other vendor's images only; the hit is the same code.
    Both directions, and their mean (the issue's "google->twitter" measure, both ways)."""
    out: dict[str, float] = {}
    for a, b in (VENDORS, VENDORS[::-1]):
        qs = [i for i, r in enumerate(rows) if r["vendor"] == a]
        gallery = [i for i, r in enumerate(rows) if r["vendor"] == b]
        where = {rows[i]["code"]: n for n, i in enumerate(gallery)}
        relevant = [{where[rows[q]["code"]]} if rows[q]["code"] in where else set() for q in qs]
        for k, v in recall_at_k(vecs[qs], vecs[gallery], relevant, ks).items():
            out[f"{a}->{b} R@{k}"] = v
    for k in ks:
        one, other = VENDORS
        out[f"cross-vendor R@{k}"] = (out[f"{one}->{other} R@{k}"] + out[f"{other}->{one} R@{k}"]) / 2
    return out


def judge(encoder, text_rows: list[dict], image_rows: list[dict], tmp: Path) -> dict[str, float]:
    """The table's measures for one encoder on one setting's judged rows (text ones if it has a text tower)."""
    out: dict[str, float] = {}
    image_cfg = EvalConfig(encoders=[], data=write_jsonl(tmp / "image.jsonl", image_rows), group_key="code",
                           ks=(1, 10))
    rows, images = load_rows(image_cfg)
    out.update(cross_vendor_recall(encoder.encode_images(images), rows))
    m = evaluate_encoder(encoder, rows, images, image_cfg)
    out["image->image R@1"], out["image->image R@10"] = m["image->image R@1 (code)"], m["image->image R@10 (code)"]
    if encoder.can_encode_text:
        text_cfg = EvalConfig(encoders=[], data=write_jsonl(tmp / "text.jsonl", text_rows), caption_key="name",
                              label_keys=["category", "subcategory"], templates=DEFAULT_TEMPLATES, ks=(1, 10))
        m = evaluate_encoder(encoder, *load_rows(text_cfg), text_cfg)
        out["text->image R@1"], out["text->image R@10"] = m["text->image R@1"], m["text->image R@10"]
        out["zero-shot category"] = next(v for k, v in m.items() if k.startswith("zero-shot category top1"))
        out["zero-shot subcategory"] = next(v for k, v in m.items() if k.startswith("zero-shot subcategory top1"))
    return out


def pixels(size: int):
    """Raw pixels at ``size`` px as an encoder (no normalisation: the issue's reference)."""
    return pixel_encoder(Preprocess(size=size, mean=[0.0] * 3, std=[1.0] * 3, interpolation="bilinear"))


def run_cli(cmd: list[str]) -> dict:
    """Run one training command (``python -m training ...``); its wall and CPU seconds and the command."""
    print("$", " ".join(cmd[1:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "command": " ".join(cmd[3:])}


def format_table(table: dict[str, dict[str, dict]], settings: list[str]) -> str:
    width = max(len(r) for r in table) + 2
    lines = []
    for s in settings:
        lines.append(f"\n[{s}] {TITLES[s]}")
        lines.append(f"{'row':<{width}}" + "".join(f"{v:>8}" for v in MEASURES.values()) + f"{'min':>7}{'CPU s':>8}")
        for row, per in table.items():
            if s not in per:
                continue
            r = per[s]
            vals = "".join(f"{r[m]:>8.3f}" if m in r else f"{'-':>8}" for m in MEASURES)
            cost = r.get("train", {})
            mins = f"{cost['wall_s'] / 60:>7.1f}" if cost else f"{'-':>7}"
            cpu = f"{cost['cpu_s']:>8.0f}" if cost else f"{'-':>8}"
            lines.append(f"{row:<{width}}{vals}{mins}{cpu}")
    return "\n".join(lines).lstrip("\n")


def plot(table: dict[str, dict[str, dict]], settings: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("cross-vendor R@1", "image->image R@1, other vendor's gallery"),
              ("text->image R@10", "text->image R@10"), ("zero-shot category", "zero-shot category (9)")]
    panels = [p for p in panels if any(p[0] in per.get(s, {}) for per in table.values() for s in settings)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 0.45 * len(table) + 2.2), sharey=True,
                             squeeze=False)
    names = list(table)
    height = 0.8 / len(settings)
    for ax, (measure, heading) in zip(axes[0], panels):
        for i, s in enumerate(settings):
            ys = [k + (i - (len(settings) - 1) / 2) * height for k in range(len(names))]
            vals = [table[n].get(s, {}).get(measure, math.nan) for n in names]
            bars = ax.barh(ys, vals, height, label=s)
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        ax.set_title(heading, fontsize=9)
        ax.set_xlim(0, 1.0)
        ax.invert_yaxis()
    axes[0][0].set_yticks(range(len(names)), names, fontsize=7)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class Bench:
    """Rows x settings of one kind of training run."""

    rows: dict[str, list[str] | None]  # name -> extra CLI options (None: raw pixels, the size in the name)
    command: Callable[[Path, Path, list[str]], list[str]]  # (train manifest, encoder out, options) -> argv
    title: str  # the chart's

    def run(self, chosen: list[str], settings: list[str], steps: int | None, name: str, merge: bool) -> dict:
        root, rows = emoji_rows()
        previous = json.loads((RESULTS / f"{name}.json").read_text()) if merge else {}
        table: dict[str, dict[str, dict]] = previous.get("results", {})
        data = splits(rows)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for row in chosen:
                for s in settings:
                    train_rows, text_rows, image_rows = data[s]
                    extra = self.rows[row]
                    if extra is None:
                        encoder, cost = pixels(16 if "16" in row else 32), None
                    else:
                        out = tmp / "encoder.safetensors"
                        if steps is not None and "--steps" not in extra:
                            extra = [*extra, "--steps", str(steps)]
                        cost = run_cli(self.command(write_jsonl(tmp / "train.jsonl", train_rows), out, extra))
                        encoder = load_encoder(out)
                    result = judge(encoder, text_rows, image_rows, tmp)
                    if cost:
                        result["train"] = cost
                    table.setdefault(row, {})[s] = result
                    print(f"{row} [{s}]: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items() if k != "train"),
                          flush=True)
                    self.write(name, root, rows, data, table, steps)
        return table

    def gather(self, sources: list[str], name: str) -> dict:
        """Merge the results of runs made side by side (each with its own ``--name``) into NAME: their
        row x setting cells, a later source's cell replacing an earlier one's; each cell keeps its own
        training command and costs, and NAME's ``gathered`` lists the sources' commands."""
        root, rows = emoji_rows()
        table: dict[str, dict[str, dict]] = {}
        commands = []
        for source in sources:
            record = json.loads((RESULTS / f"{source}.json").read_text())
            commands += record.get("gathered", [record["command"]])
            for row, per in record["results"].items():
                table.setdefault(row, {}).update(per)
        self.write(name, root, rows, splits(rows), table, None, gathered=commands)
        return table

    def write(self, name: str, root: Path, rows: list[dict], data: dict, table: dict, steps: int | None,
              gathered: list[str] | None = None) -> None:
        settings = [s for s in SETTINGS if any(s in per for per in table.values())]
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.txt").write_text(format_table(table, settings) + "\n")
        extra = {"gathered": gathered} if gathered else {}
        save(name, {"command": " ".join(sys.argv), **extra, "data": str(root), "images": len(rows),
                    "holdout": {"seed": HOLDOUT_SEED, "codes": len({r["code"] for r in data["b"][1]})},
                    "steps": steps, "results": table})
        try:
            plot(table, settings, RESULTS / f"{name}.png", self.title)
        except ImportError as exc:
            print(f"no chart: {exc}")


def choose(rows: dict, wanted: list[str] | None) -> list[str]:
    """Row names matching ``wanted`` (names or prefixes; None: all), in the rows' order."""
    return [r for r in rows if wanted is None or any(r.startswith(x) for x in wanted)]
