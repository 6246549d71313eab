"""Helpers shared by the benchmarks: where the data is, where results go."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# LOOKALIKE_BENCH_RESULTS: another folder for the results (bench/device_check.sh collects them there)
RESULTS = Path(os.environ.get("LOOKALIKE_BENCH_RESULTS", REPO / "bench" / "results"))
SHARED = Path(os.environ.get("LOOKALIKE_DATASETS", REPO.parent / "shared" / "datasets"))


def emoji_rows(root: Path | None = None) -> tuple[Path, list[dict]]:
    """The full emoji set if it is beside the checkout, else the repository's sample."""
    root = root or (SHARED / "emoji" if (SHARED / "emoji" / "metadata.jsonl").exists() else REPO / "samples" / "emoji")
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        r["file"] = str((root / r["file"]).resolve())
    return root, rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def machine() -> dict:
    return {
        "host": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def median_after(values: list[float], skip: int) -> float:
    rest = values[skip:] or values
    return statistics.median(rest)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def random_encoder(model_name: str, path: Path) -> Path:
    """A randomly initialised CLIP encoder file of ``model_name`` (speed does not depend on the weights)."""
    from training.clip_model import build_model, model_config, preprocess_of
    from training.encoder import Preprocess, save_encoder

    cfg = model_config(model_name)
    model = build_model(cfg)
    save_encoder(path, kind="clip", arch={"model_name": model_name, "model_cfg": cfg}, state_dict=model.state_dict(),
                 preprocess=Preprocess(**preprocess_of(model)), dim=int(cfg["embed_dim"]),
                 tokenizer={"type": "open_clip", "model_name": model_name,
                            "context_length": cfg["text_cfg"].get("context_length", 77)})
    return path
