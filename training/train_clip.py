"""``python -m training clip``: train a CLIP encoder on image-caption pairs and write an encoder file."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from training.clip import ClipMethod
from training.clip_model import build_model, build_tokenizer, model_config, preprocess_of
from training.data import ImageTextDataset
from training.encoder import Encoder, Preprocess, save_encoder
from training.evaluate import text_to_image_recall
from training.loop import LoopConfig, seed_everything, train

log = logging.getLogger(__name__)


@dataclass
class ClipTrainConfig:
    data: Path
    out: Path
    image_key: str = "file"
    caption_key: str = "caption"
    model: str = "lookalike-tiny"
    image_size: int | None = None
    batch_size: int = 128
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    eval_limit: int = 4000  # images used for the before/after recall report
    loop: LoopConfig = field(default_factory=LoopConfig)


@dataclass
class ClipTrainResult:
    fingerprint: str
    recall_untrained: dict[int, float]
    recall_trained: dict[int, float]
    history: list[dict[str, float]]
    seconds: float


def _encoder(model, tokenizer, preprocess: Preprocess, dim: int, device: torch.device) -> Encoder:
    return Encoder(
        kind="clip", dim=dim, fingerprint="(in training)", preprocess=preprocess,
        image_tower=model.encode_image, text_tower=model.encode_text, tokenizer=tokenizer,
        model=model, device=device,
    )


def run(cfg: ClipTrainConfig) -> ClipTrainResult:
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    model_cfg = model_config(cfg.model)
    if cfg.image_size:
        model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    model = build_model(model_cfg).to(device)
    tokenizer = build_tokenizer(cfg.model, model_cfg)
    preprocess = Preprocess(**preprocess_of(model))
    dim = int(model_cfg["embed_dim"])

    dataset = ImageTextDataset(cfg.data, cfg.image_key, cfg.caption_key, preprocess.transform(is_train=True), tokenizer)
    batch_size = min(cfg.batch_size, len(dataset))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    print(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) on "
          f"{len(dataset)} pairs from {cfg.data}, batch {batch_size}, {cfg.loop.steps} steps, device {device}")

    n_eval = min(cfg.eval_limit, len(dataset))
    eval_images = [dataset.load_image(i) for i in range(n_eval)]
    eval_captions = dataset.captions[:n_eval]
    model.eval()
    before = text_to_image_recall(_encoder(model, tokenizer, preprocess, dim, device), eval_images, eval_captions)

    started = time.perf_counter()
    history = train(ClipMethod.create(model), loader, cfg.loop, device)
    seconds = time.perf_counter() - started

    after = text_to_image_recall(_encoder(model, tokenizer, preprocess, dim, device), eval_images, eval_captions)
    run_summary = {
        "method": "clip",
        "data": str(cfg.data),
        "pairs": len(dataset),
        "bad_files": len(dataset.bad_files),
        "config": _jsonable(asdict(cfg)),
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": round(seconds, 1),
        "text_to_image_recall": {"untrained": before, "trained": after, "images": n_eval},
        "torch": torch.__version__,
        "host": platform.node(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fp = save_encoder(
        cfg.out, kind="clip", arch={"model_name": cfg.model, "model_cfg": model_cfg},
        state_dict=model.state_dict(), preprocess=preprocess, dim=dim,
        tokenizer={"type": "open_clip", "model_name": cfg.model,
                   "context_length": model_cfg["text_cfg"].get("context_length", 77)},
        run=run_summary,
    )
    print(f"\ntext->image recall on {n_eval} images (query = caption, hit = that image)")
    print(f"{'encoder':<12}{'R@1':>8}{'R@5':>8}{'R@10':>8}")
    for name, r in (("untrained", before), ("trained", after)):
        print(f"{name:<12}{r[1]:>8.3f}{r[5]:>8.3f}{r[10]:>8.3f}")
    print(f"\nwrote {cfg.out} (fingerprint {fp[:16]}) after {seconds:.0f} s of training")
    return ClipTrainResult(fp, before, after, history, seconds)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
