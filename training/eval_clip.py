"""``python -m training eval``: one comparable table for one or more encoders on a manifest.

Metrics (all on L2-normalised embeddings, cosine similarity):
- zero-shot accuracy on a label column, each label embedded with a prompt-template ensemble;
- text->image and image->text recall@k, the caption column being the text;
- image->image recall@k, a hit being another image with the same value of a group column
  (for the emoji data, ``code``: the same emoji drawn by the other vendor).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.encoder import Encoder, load_encoder
from training.evaluate import grouped_image_recall, image_to_text_recall, recall_at_k, zero_shot_accuracy
from training.manifest import read_manifest, resolve

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of {}.", "an emoji of {}.", "{}")


@dataclass
class EvalConfig:
    encoders: list[str]
    data: Path
    image_key: str = "file"
    caption_key: str | None = None
    label_keys: list[str] = field(default_factory=list)
    group_key: str | None = None
    where: dict[str, str] = field(default_factory=dict)  # keep rows whose column equals the value
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    ks: tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"


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


def evaluate_encoder(encoder: Encoder, rows: list[dict[str, Any]], images: list[Image.Image], cfg: EvalConfig) -> dict[str, float]:
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


def run(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    rows, images = load_rows(cfg)
    results = {}
    for spec in cfg.encoders:
        results[spec] = evaluate_encoder(load_encoder(spec, cfg.device), rows, images, cfg)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, encoders as columns."""
    names = list(results)
    metrics = list(dict.fromkeys(m for r in results.values() for m in r))
    short = [Path(n).name if not n.startswith("open_clip:") else n for n in names]
    width = max([len(m) for m in metrics] + [6])
    cols = [max(8, len(s)) for s in short]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{s:>{c}}" for s, c in zip(short, cols))]
    for m in metrics:
        vals = [results[n].get(m, math.nan) for n in names]
        lines.append(f"{m:<{width}}  " + "  ".join(f"{v:>{c}.3f}" for v, c in zip(vals, cols)))
    return "\n".join(lines)


def write_json(path: Path, cfg: EvalConfig, results: dict[str, dict[str, float]]) -> None:
    payload = {"data": str(cfg.data), "where": cfg.where, "templates": list(cfg.templates), "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
