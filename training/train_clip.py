"""``python -m training clip``: train a CLIP encoder on image-caption pairs and write an encoder file.

The pairs come from a JSONL/CSV manifest (exact resume, bad files counted) or from
webdataset tar shards (``training.shards``: streamed, shuffled, decoded in workers).

Runs unchanged on one CPU or under ``torchrun`` on several GPUs / machines.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import open_clip
import torch
from torch.utils.data import DataLoader

from training.augment import AugmentConfig, simclr_transform
from training.clip import ClipMethod, ClipTrainingModel
from training.clip_model import BackboneTower, attach_backbone_tower, build_model, build_tokenizer, model_config, preprocess_of
from training.batch_augment import BatchAugment
from training.data import ROW, GroupedCollate, ImageTextDataset, KeyedImages
from training.distributed import init_from_env, unwrap
from training.encoder import Encoder, Preprocess, load_encoder, save_encoder
from training.evaluate import text_to_image_recall
from training.loop import RunFiles, Trainer, jsonable, keyed_loader, resolve_precision, seed_everything
from training.shards import DecodePair, first_pairs, is_shards, shard_pipeline, shard_urls

log = logging.getLogger(__name__)

# The image side's augmentation: mild crops and brightness/contrast jitter stand in for another artist's
# drawing of the same thing; hue, saturation and grayscale would erase the colours that tell emoji apart
# (bench/README.md, clip_quality). No flips by default: captions may say "left" or "right".
CLIP_AUGMENT = dict(min_scale=0.6, flip_prob=0.0, jitter_prob=0.8, jitter_strength=0.5, jitter_saturation=False,
                    jitter_hue=False, grayscale_prob=0.0, blur_prob=0.0)
NO_AUGMENT = AugmentConfig(min_scale=1.0, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


@dataclass
class ClipTrainConfig(RunFiles):
    data: Path
    out: Path
    image_key: str = "file"
    caption_key: str = "caption"
    model: str = "lookalike-cnn"
    image_backbone: dict | None = None  # replace the model's image tower by this training.backbones spec
    pretrained: str | None = None  # open_clip tag or local checkpoint file to start from
    lock_image: bool = False
    lock_text: bool = False
    image_tower: Path | None = None  # an image-only encoder file (SimCLR, MoCo, RotNet) as the image tower
    loss: str = "clip"  # clip (softmax, open_clip.ClipLoss) or siglip (pairwise sigmoid, open_clip.SigLipLoss)
    image_size: int | None = None
    # The data-efficient form (training.clip): two views per item, captions / groups as positives,
    # an image-only SupCon term beside CLIP's (SLIP). False: plain CLIP on (image, caption) pairs.
    views: int = 2  # 1: plain CLIP on (image, caption) pairs, open_clip's ClipLoss / SigLipLoss
    multi_positive: bool = True  # False: each item is its own group (only its own views and caption are positives)
    group_key: str | None = None  # items sharing this column are positives (default: sharing a caption)
    ssl_weight: float = 1.0  # weight of the image-only term (0: off)
    ssl_temperature: float = 0.1
    ssl_dim: int = 128  # output width of its projection head (dropped from the encoder file)
    caption_variant_keys: list[str] = field(default_factory=list)  # more captions per row, one drawn per step
    augment: AugmentConfig | None = field(default_factory=lambda: AugmentConfig(**CLIP_AUGMENT))  # None: open_clip's
    cache_mb: float = 1024.0  # decode manifest images into memory when they fit in this (0: never)
    channels_last: bool | None = None  # NHWC image tower; None: for convolutional towers
    batch_size: int = 128  # per process
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    eval_limit: int = 4000  # images used for the before/after recall report
    val_data: Path | None = None  # manifest for the periodic monitor
    val_label_keys: list[str] = field(default_factory=list)
    val_group_key: str | None = None


@dataclass
class ClipTrainResult:
    fingerprint: str | None
    recall_untrained: dict[int, float] | None
    recall_trained: dict[int, float]
    history: list[dict[str, float]]
    seconds: float


def _encoder(model, tokenizer, preprocess: Preprocess, dim: int, device: torch.device) -> Encoder:
    return Encoder(
        kind="clip", dim=dim, fingerprint="(in training)", preprocess=preprocess,
        image_tower=model.encode_image, text_tower=model.encode_text, tokenizer=tokenizer,
        model=model, device=device,
    )


def make_model(cfg: ClipTrainConfig) -> tuple[torch.nn.Module, dict, dict]:
    """(model, its open_clip config, the ``arch`` record of the encoder file)."""
    model_cfg = model_config(cfg.model)
    if cfg.image_backbone:
        model_cfg["image_backbone"] = dict(cfg.image_backbone)
    if cfg.image_tower:
        model_cfg.pop("image_backbone", None)
    if cfg.image_size:
        model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    if cfg.loss == "siglip" and model_cfg.get("init_logit_bias") is None and not cfg.pretrained:
        # SigLIP's initialisation: t = 10, b = -10, so that the many negatives start near probability 0
        model_cfg.update(init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    if cfg.pretrained:
        model = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, require_pretrained=True,
                                       force_image_size=cfg.image_size)
    else:
        model = build_model(model_cfg)
    arch = {"model_name": cfg.model, "model_cfg": model_cfg}
    if cfg.image_tower:
        arch["image_tower"] = _attach_image_encoder(model, cfg.image_tower, int(model_cfg["embed_dim"]), cfg.lock_image)
    elif cfg.lock_image and isinstance(model.visual, BackboneTower):
        model.visual.lock()
    elif cfg.lock_image:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=0)
    return model, model_cfg, arch


def _attach_image_encoder(model: torch.nn.Module, path: Path, embed_dim: int, locked: bool) -> dict:
    """Make an image-only encoder file's backbone (with its weights and preprocessing) the image tower."""
    source = load_encoder(path)
    if source.kind == "clip" or "backbone" not in source.meta.get("arch", {}):
        raise ValueError(f"--image-tower takes an image-only encoder file (simclr, moco, rotnet); {path} is "
                         f"a {source.kind} encoder")
    spec = source.meta["arch"]["backbone"]
    tower = attach_backbone_tower(model, spec, embed_dim, asdict(source.preprocess), locked=locked)
    tower.backbone.load_state_dict(source.image_tower.state_dict())
    return {"backbone": spec, "from": source.kind, "from_fingerprint": source.fingerprint, "locked": locked}


def _side(size: int | list[int]) -> int:
    return int(size) if isinstance(size, int) else int(min(size))


def _monitor(cfg: ClipTrainConfig, tokenizer, preprocess: Preprocess, dim: int, device: torch.device):
    """Zero-shot and retrieval metrics on the validation manifest, for the periodic monitor."""
    if cfg.val_data is None:
        return None
    from training.eval_clip import EvalConfig, evaluate_encoder, load_rows

    ecfg = EvalConfig(encoders=[], data=cfg.val_data, image_key=cfg.image_key, caption_key=cfg.caption_key,
                      label_keys=cfg.val_label_keys, group_key=cfg.val_group_key)
    rows, images = load_rows(ecfg)
    # the trainer hands over its model: a ClipTrainingModel holds the CLIP model as .clip
    return lambda model: evaluate_encoder(_encoder(getattr(model, "clip", model), tokenizer, preprocess, dim, device),
                                          rows, images, ecfg)


def run(cfg: ClipTrainConfig) -> ClipTrainResult:
    dist, device = init_from_env(cfg.device)
    seed_everything(cfg.seed)
    cfg.loop = replace(cfg.loop, precision=resolve_precision(cfg.loop.precision, device))
    model, model_cfg, arch = make_model(cfg)
    channels_last = cfg.channels_last if cfg.channels_last is not None else isinstance(model.visual, BackboneTower)
    if channels_last:
        model.visual.to(memory_format=torch.channels_last)
    tokenizer = build_tokenizer(cfg.model, model_cfg)
    preprocess = Preprocess(**preprocess_of(model))
    dim = int(model_cfg["embed_dim"])

    shards = shard_urls(cfg.data) if is_shards(cfg.data) else None
    grouped = cfg.views == 2 and shards is None
    if cfg.views == 2 and shards is not None:
        log.warning("webdataset shards train plain CLIP: the two-view, multi-positive form needs a manifest")
    if grouped or cfg.augment is None:
        transform = preprocess.transform(is_train=True)  # (the grouped form augments whole batches)
    else:
        transform = simclr_transform(preprocess, cfg.augment)
    if shards is not None:
        decode = DecodePair(cfg.image_key, cfg.caption_key, transform, tokenizer)
        dataset = None
        batch_size, described = cfg.batch_size, f"{len(shards)} shards"
    else:
        dataset = ImageTextDataset(cfg.data, cfg.image_key, cfg.caption_key, transform, tokenizer, seed=cfg.seed,
                                   views=2 if grouped else 1,
                                   group_key=cfg.group_key if cfg.multi_positive else ROW,
                                   caption_variant_keys=cfg.caption_variant_keys,
                                   side=2 * _side(preprocess.size), cache_mb=cfg.cache_mb)
        batch_size, described = min(cfg.batch_size, len(dataset) // dist.world_size), f"{len(dataset)} pairs"
    if grouped:
        train_model = ClipTrainingModel(model, cfg.ssl_dim if cfg.ssl_weight > 0 else 0).to(device)
        method = ClipMethod.create(train_model, dist.rank, dist.world_size, "multi-positive",
                                   ssl_weight=cfg.ssl_weight, ssl_temperature=cfg.ssl_temperature,
                                   channels_last=channels_last)
    else:
        model = model.to(device)
        method = ClipMethod.create(model, dist.rank, dist.world_size, cfg.loss, channels_last=channels_last)
    trainer = Trainer(
        method, cfg.loop, device, dist,
        checkpoint=cfg.checkpoint_path, log_file=cfg.log_file,
        monitor=_monitor(cfg, tokenizer, preprocess, dim, device),
    )
    if dist.is_main:
        print(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) on "
              f"{described} from {cfg.data}, batch {batch_size} x {dist.world_size} process(es), "
              f"{cfg.loop.steps} steps, device {device}")

    eval_images: list = []
    eval_captions: list[str] = []
    if dist.is_main and shards is not None:
        eval_images, eval_captions = first_pairs(shards, decode, cfg.eval_limit)
    elif dist.is_main:
        n_eval = min(cfg.eval_limit, len(dataset))
        eval_images = [KeyedImages.load_image(dataset, i) for i in range(n_eval)]  # PIL, not the cached pixels
        eval_captions = dataset.captions[:n_eval]
    n_eval = len(eval_images)
    before = None
    if cfg.resume:
        start = trainer.load_checkpoint(cfg.resume)
        if dist.is_main:
            print(f"resumed from {cfg.resume} at step {start}")
    elif dist.is_main:
        model.eval()
        before = text_to_image_recall(_encoder(model, tokenizer, preprocess, dim, device), eval_images, eval_captions)
    if shards is not None:
        # every process (and every resumed start) draws its own shard stream
        stream_seed = cfg.seed * 1_000_003 + dist.rank * 10_007 + trainer.step
        loader = DataLoader(shard_pipeline(shards, decode, batch_size, stream_seed), batch_size=None,
                            num_workers=cfg.workers, pin_memory=device.type == "cuda")
    else:
        collate = None
        if grouped:
            augment = BatchAugment(cfg.augment or NO_AUGMENT, _side(preprocess.size), preprocess.mean, preprocess.std)
            collate = GroupedCollate(augment, cfg.seed)
        loader = keyed_loader(dataset, batch_size, cfg.seed, dist, device, cfg.workers, trainer.step, collate)

    started = time.perf_counter()
    history = trainer.fit(loader)
    seconds = time.perf_counter() - started
    if not dist.is_main:
        return ClipTrainResult(None, None, {}, history, seconds)

    model = unwrap(model).eval()
    after = text_to_image_recall(_encoder(model, tokenizer, preprocess, dim, device), eval_images, eval_captions)
    run_summary = {
        "method": "clip",
        "data": str(cfg.data),
        "pairs": len(dataset) if dataset is not None else None,
        "shards": len(shards) if shards is not None else None,
        "bad_files": len(dataset.bad_files) if dataset is not None else None,
        "config": jsonable(asdict(cfg)),
        "world_size": dist.world_size,
        "final_loss": history[-1]["loss"] if history and "loss" in history[-1] else None,
        "train_seconds": round(seconds, 1),
        "text_to_image_recall": {"untrained": before, "trained": after, "images": n_eval},
        "torch": torch.__version__,
        "host": platform.node(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fp = save_encoder(
        cfg.out, kind="clip", arch=arch,
        state_dict=model.state_dict(), preprocess=preprocess, dim=dim,
        tokenizer={"type": "open_clip", "model_name": cfg.model,
                   "context_length": model_cfg["text_cfg"].get("context_length", 77)},
        run=run_summary,
    )
    print(f"\ntext->image recall on {n_eval} images (query = caption, hit = that image)")
    print(f"{'encoder':<12}{'R@1':>8}{'R@5':>8}{'R@10':>8}")
    for name, r in (("untrained", before), ("trained", after)):
        if r is not None:
            print(f"{name:<12}{r[1]:>8.3f}{r[5]:>8.3f}{r[10]:>8.3f}")
    print(f"\nwrote {cfg.out} (fingerprint {fp[:16]}) after {seconds:.0f} s of training")
    return ClipTrainResult(fp, before, after, history, seconds)
