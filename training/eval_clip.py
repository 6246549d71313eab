"""``python -m training eval``: one comparable table for one or more encoders.

Metrics (all on L2-normalised embeddings, cosine similarity), on a manifest:
- zero-shot accuracy on a label column, each label embedded with a prompt-template ensemble;
- text->image and image->text recall@k, the caption column being the text;
- image->image recall@k, a hit being another image with the same value of a group column
  (for the emoji data, ``code``: the same emoji drawn by the other vendor);
and on labelled images (a folder whose sub-folder names are labels, or a manifest column),
split into train/test by a seeded stratified split (``training.probe``):
- weighted k-NN accuracy (k most similar train images vote with weight exp(sim / 0.07));
- linear-probe accuracy (logistic regression on the frozen train features).
Image-only encoders (SimCLR, MoCo, RotNet) get the image metrics; a raw-pixel baseline
(``training.baselines``) can join the table as one more column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from core.manifest import read_manifest, resolve
from training.baselines import PIXELS, pixel_encoder
from training.encoder import Encoder, load_encoder
from training.evaluate import grouped_image_recall, image_to_text_recall, recall_at_k, zero_shot_accuracy

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of {}.", "an emoji of {}.", "{}")


@dataclass
class EvalConfig:
    encoders: list[str]
    data: Path | None  # manifest (optional when ``folder`` is given)
    image_key: str = "file"
    caption_key: str | None = None
    label_keys: list[str] = field(default_factory=list)
    group_key: str | None = None
    where: dict[str, str] = field(default_factory=dict)  # keep rows whose column equals the value
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    ks: tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"
    folder: Path | None = None  # labelled folder (LABEL/IMAGE) for k-NN and linear probe
    probe_key: str | None = None  # or a manifest column as the label
    test_fraction: float = 0.2
    split_seed: int = 0
    knn_ks: tuple[int, ...] = (20,)
    knn_temperature: float = 0.07
    linear_wd: float = 1e-4
    linear_iters: int = 300  # 0: no linear probe
    pixels: bool | None = None  # raw-pixel baseline column; None: only when there are labels to probe

    @property
    def with_pixels(self) -> bool:
        return self.pixels if self.pixels is not None else bool(self.folder or self.probe_key)


def load_rows(cfg: EvalConfig) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    rows = [r for r in read_manifest(cfg.data, required=(cfg.image_key,))
            if all(str(r.get(k)) == v for k, v in cfg.where.items())]
    if not rows:
        raise ValueError(f"no rows of {cfg.data} match {cfg.where}")
    images = []
    for r in rows:
        with Image.open(resolve(cfg.data, str(r[cfg.image_key]))) as im:
            im.load()
            images.append(im)
    return rows, images


def evaluate_encoder(encoder: Encoder, rows: list[dict[str, Any]], images: list[Image.Image],
                     cfg: EvalConfig) -> dict[str, float]:
    """Every configured metric for one encoder, as a flat {name: value} dict."""
    out: dict[str, float] = {}
    image_vecs = encoder.encode_images(images)
    if cfg.caption_key and encoder.can_encode_text:
        captions = [str(r[cfg.caption_key]) for r in rows]
        unique = sorted(set(captions))
        text_vecs = encoder.encode_texts(unique)
        pos = {c: i for i, c in enumerate(unique)}
        holders: dict[int, set[int]] = {}
        for i, c in enumerate(captions):
            holders.setdefault(pos[c], set()).add(i)
        for k, v in recall_at_k(text_vecs, image_vecs, [holders[i] for i in range(len(unique))], cfg.ks).items():
            out[f"text->image R@{k}"] = v
        for k, v in image_to_text_recall(image_vecs, text_vecs, [pos[c] for c in captions], cfg.ks).items():
            out[f"image->text R@{k}"] = v
    if cfg.group_key:
        for k, v in grouped_image_recall(image_vecs, [r[cfg.group_key] for r in rows], cfg.ks).items():
            out[f"image->image R@{k} ({cfg.group_key})"] = v
    if encoder.can_encode_text:
        for key in cfg.label_keys:
            classes = sorted({str(r[key]) for r in rows})
            index = {c: i for i, c in enumerate(classes)}
            weights = encoder.zero_shot_weights(classes, cfg.templates)
            acc = zero_shot_accuracy(image_vecs, weights, [index[str(r[key])] for r in rows])
            for k, v in acc.items():
                out[f"zero-shot {key} top{k} ({len(classes)} classes)"] = v
    return out


def probe_metrics(encoder: Encoder, images: list[Image.Image], labels: list, cfg: EvalConfig,
                  prefix: str = "") -> dict[str, float]:
    """k-NN and linear-probe accuracy of ``encoder``'s features on the seeded stratified split of ``labels``."""
    from training.probe import encode_labels, knn_accuracy, linear_probe_accuracy, stratified_split

    y, classes = encode_labels(labels)
    train, test = stratified_split(labels, cfg.test_fraction, cfg.split_seed)
    if len(test) == 0:
        raise ValueError(f"--test-fraction {cfg.test_fraction} leaves no test images")
    feats = encoder.encode_images(images)
    tag = f"{prefix}{len(classes)} classes"
    out = {}
    for k in cfg.knn_ks:
        out[f"k-NN top1 (k={k}, {tag})"] = knn_accuracy(feats[train], y[train], feats[test], y[test], k,
                                                         cfg.knn_temperature)
    if cfg.linear_iters > 0:
        out[f"linear probe top1 ({tag})"] = linear_probe_accuracy(feats[train], y[train], feats[test], y[test],
                                                                  cfg.linear_wd, cfg.linear_iters)
    return out


def load_folder(folder: Path) -> tuple[list[Image.Image], list[str]]:
    from training.data import labelled_folder

    paths, labels = labelled_folder(folder)
    images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            images.append(im)
    return images, labels


def load_encoders(cfg: EvalConfig) -> dict[str, Encoder]:
    """The configured encoders by name, plus the raw-pixel baseline (at the first encoder's input size)."""
    encoders = {spec: load_encoder(spec, cfg.device) for spec in cfg.encoders}
    if cfg.with_pixels and encoders:
        encoders[PIXELS] = pixel_encoder(next(iter(encoders.values())).preprocess, cfg.device)
    return encoders


def run(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    manifest = load_rows(cfg) if cfg.data is not None else None
    folder = load_folder(cfg.folder) if cfg.folder is not None else None
    if cfg.probe_key and manifest is None:
        raise ValueError("--probe-key names a column of --data, which is missing")
    results: dict[str, dict[str, float]] = {}
    for name, encoder in load_encoders(cfg).items():
        out: dict[str, float] = {}
        if manifest is not None:
            rows, images = manifest
            out.update(evaluate_encoder(encoder, rows, images, cfg))
            if cfg.probe_key:
                out.update(probe_metrics(encoder, images, [r[cfg.probe_key] for r in rows], cfg,
                                         prefix=f"{cfg.probe_key}, "))
        if folder is not None:
            out.update(probe_metrics(encoder, *folder, cfg))
        results[name] = out
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, encoders as columns."""
    names = list(results)
    metrics = list(dict.fromkeys(m for r in results.values() for m in r))
    short = _short_names(names)
    width = max([len(m) for m in metrics] + [6])
    cols = [max(8, len(s)) for s in short]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{s:>{c}}" for s, c in zip(short, cols))]
    for m in metrics:
        vals = [results[n].get(m, math.nan) for n in names]
        lines.append(f"{m:<{width}}  " + "  ".join(f"{v:>{c}.3f}" for v, c in zip(vals, cols)))
    return "\n".join(lines)


def _short_names(names: list[str]) -> list[str]:
    return [Path(n).name if not n.startswith("open_clip:") else n for n in names]


def write_json(path: Path, cfg: EvalConfig, results: dict[str, dict[str, float]]) -> None:
    payload = {"data": str(cfg.data) if cfg.data else None, "where": cfg.where, "templates": list(cfg.templates),
               "folder": str(cfg.folder) if cfg.folder else None, "probe_key": cfg.probe_key,
               "split": {"test_fraction": cfg.test_fraction, "seed": cfg.split_seed},
               "knn": {"k": list(cfg.knn_ks), "temperature": cfg.knn_temperature},
               "linear_probe": {"weight_decay": cfg.linear_wd, "lbfgs_iters": cfg.linear_iters},
               "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def plot(results: dict[str, dict[str, float]], path: Path, title: str | None = None) -> Path:
    """A grouped bar chart of the table (one group per metric, one bar per encoder) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib (or the bench extra)") from None
    names = list(results)
    metrics = [m for m in dict.fromkeys(m for r in results.values() for m in r)
               if any(not math.isnan(results[n].get(m, math.nan)) for n in names)]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) * max(1, len(names)) * 0.45), 4.5))
    for i, (name, label) in enumerate(zip(names, _short_names(names))):
        values = [results[name].get(m, math.nan) for m in metrics]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(metrics))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(range(len(metrics)), [m.replace(" (", "\n(") for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy / recall")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
