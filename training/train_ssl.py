"""``python -m training simclr|moco|rotnet``: train an image-only encoder without labels and write an encoder file.

The three methods share everything but their task: the data (a folder or a manifest of
images, each item's views seeded by its sampler key), the backbones, the Trainer (AdamW,
cosine schedule with warm-up, mixed precision, DDP under torchrun, checkpoints and exact
resume) and the encoder format. Runs unchanged on one CPU or under ``torchrun``.

Holding out an evaluation split: when ``data`` is a folder of class sub-folders and
``holdout > 0``, the run trains on the images that ``training.probe.stratified_split``
(same fraction and seed) puts in *train*, so ``python -m training eval --folder`` with the
same ``--test-fraction`` and ``--split-seed`` tests on images the encoder never saw.
The labels choose the split only; training never reads them.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from training.augment import AugmentConfig, Views, light_transform, simclr_transform
from training.backbones import build_backbone
from training.batch_augment import BatchAugment
from training.data import ImageDataset, ImagePixels, ViewsCollate, labelled_folder, list_images, manifest_images
from training.distributed import DistInfo, init_from_env, unwrap
from training.encoder import Encoder, Preprocess, save_encoder
from training.loop import RunFiles, Trainer, jsonable, keyed_loader, resolve_precision, seed_everything

log = logging.getLogger(__name__)

METHODS = ("simclr", "moco", "rotnet")
DEFAULT_TEMPERATURE = {"simclr": 0.1, "moco": 0.2}  # SimCLR: 0.1 beat 0.5 on emoji (bench/README.md)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class SSLTrainConfig(RunFiles):
    method: str  # simclr | moco | rotnet
    data: Path  # a folder of images (recursively) or a JSONL/CSV manifest
    out: Path
    image_key: str = "file"  # manifest column with the image path
    where: dict[str, str] = field(default_factory=dict)  # manifest rows to keep (column == value)
    holdout: float = 0.0  # labelled folder: leave this stratified fraction out of training
    split_seed: int = 0
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "small-cnn"})
    image_size: int = 32
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    augment: AugmentConfig | None = None  # None: AugmentConfig.for_size(image_size)
    temperature: float | None = None  # None: 0.1 for SimCLR, 0.2 for MoCo
    proj_hidden: int = 512
    proj_dim: int = 128
    momentum: float = 0.99  # MoCo's key encoder
    queue_size: int = 4096  # MoCo's negatives
    symmetric: bool = False  # MoCo: symmetrised loss
    separate_views: bool = False  # SimCLR: one forward per view (BN statistics per view) instead of one joint
    sync_bn: bool = False  # SyncBatchNorm across processes (GPUs only)
    channels_last: bool = False  # NHWC weights: faster convolutions on CPUs (and on GPUs with AMP)
    # SimCLR / MoCo: decode the images once into memory (when they fit in cache_mb) and augment whole
    # batches (training.batch_augment) instead of one view at a time with torchvision; needs blur_prob 0
    batch_augment: bool = True
    cache_mb: float = 1024.0
    threads: int = 0  # intra-op CPU threads of the training process (0: torch's default)
    batch_size: int = 256  # per process
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    val_folder: Path | None = None  # labelled folder for the k-NN monitor
    val_fraction: float = 0.2  # its query part (the rest is the memory bank), split with split_seed
    knn_k: int = 20
    knn_temperature: float = 0.07


@dataclass
class SSLTrainResult:
    fingerprint: str | None
    knn_untrained: float | None
    knn_trained: float | None
    history: list[dict[str, float]]
    seconds: float
    images: int


def training_images(cfg: SSLTrainConfig) -> list[Path]:
    """The images to train on: the whole folder / manifest, or a labelled folder's train split."""
    if cfg.data.is_dir():
        if cfg.holdout > 0:
            from training.probe import stratified_split

            paths, labels = labelled_folder(cfg.data)
            train_idx, _ = stratified_split(labels, cfg.holdout, cfg.split_seed)
            return [paths[i] for i in train_idx]
        return list_images(cfg.data)
    if cfg.holdout > 0:
        raise ValueError("--holdout needs a folder of class sub-folders as --data")
    return manifest_images(cfg.data, cfg.image_key, cfg.where)


def build(cfg: SSLTrainConfig, dist: DistInfo = DistInfo()):
    """(model, method, train transform) for ``cfg.method``, the model holding ``.backbone``."""
    from training.moco import MoCoMethod, MoCoModel
    from training.rotnet import RotNetMethod, RotNetModel
    from training.simclr import SimCLRMethod, SimCLRModel

    backbone = build_backbone(cfg.backbone)
    preprocess = preprocess_for(cfg)
    if cfg.method == "simclr":
        model: nn.Module = SimCLRModel(backbone, cfg.proj_hidden, cfg.proj_dim)
        method = SimCLRMethod(model, temperature_for(cfg), dist.rank, dist.world_size,
                              joint_views=not cfg.separate_views)
        transform: Callable = Views(simclr_transform(preprocess, cfg.augment or AugmentConfig.for_size(cfg.image_size)))
    elif cfg.method == "moco":
        model = MoCoModel(backbone, cfg.proj_hidden, cfg.proj_dim, cfg.queue_size)
        method = MoCoMethod(model, temperature_for(cfg), cfg.momentum, cfg.symmetric, dist.rank, dist.world_size)
        transform = Views(simclr_transform(preprocess, cfg.augment or AugmentConfig.for_size(cfg.image_size)))
    elif cfg.method == "rotnet":
        model = RotNetModel(backbone)
        method = RotNetMethod(model)
        # the crop and flip of the augmentation settings; colour and rotation ops are not RotNet's pretext
        aug = cfg.augment or AugmentConfig(min_scale=0.5)
        transform = Views(light_transform(preprocess, aug.min_scale, aug.flip_prob), n=1)
    else:
        raise ValueError(f"unknown method {cfg.method!r}: {', '.join(METHODS)}")
    return model, method, transform


def temperature_for(cfg: SSLTrainConfig) -> float:
    return cfg.temperature if cfg.temperature is not None else DEFAULT_TEMPERATURE[cfg.method]


def preprocess_for(cfg: SSLTrainConfig) -> Preprocess:
    # bilinear, as SimCLR's crops and torchvision's RandomResizedCrop: the same resampling in training and use
    return Preprocess(size=cfg.image_size, mean=list(cfg.mean), std=list(cfg.std), interpolation="bilinear")


def image_encoder(backbone: nn.Module, kind: str, preprocess: Preprocess, device: torch.device) -> Encoder:
    """An Encoder around a backbone still in training (for monitors and reports)."""
    return Encoder(kind=kind, dim=backbone.out_dim, fingerprint="(in training)", preprocess=preprocess,
                   image_tower=backbone, device=device, batch_size=256)


def knn_monitor(cfg: SSLTrainConfig, preprocess: Preprocess, device: torch.device):
    """k-NN accuracy of the backbone's features on the labelled ``val_folder`` (memory bank / queries split)."""
    if cfg.val_folder is None:
        return None
    from PIL import Image

    from training.probe import encode_labels, knn_accuracy, stratified_split

    paths, names = labelled_folder(cfg.val_folder)
    labels, _ = encode_labels(names)
    bank, queries = stratified_split(names, cfg.val_fraction, cfg.split_seed)
    transform = preprocess.transform(is_train=False)
    tensors = []
    for p in paths:
        with Image.open(p) as im:
            tensors.append(transform(im))
    batch = torch.stack(tensors)  # (N, 3, H, W), preprocessed once

    def monitor(model: nn.Module) -> dict[str, float]:
        feats = image_encoder(model.backbone, cfg.method, preprocess, device).encode_tensors(batch)
        acc = knn_accuracy(feats[bank], labels[bank], feats[queries], labels[queries], cfg.knn_k, cfg.knn_temperature)
        return {f"knn{cfg.knn_k}": acc}

    return monitor


def run(cfg: SSLTrainConfig) -> SSLTrainResult:
    dist, device = init_from_env(cfg.device)
    if cfg.threads:
        # On a small CPU machine the DataLoader workers need cores too: one thread for the model and the
        # rest for augmentation beats every process fighting over every core.
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    cfg.loop = replace(cfg.loop, precision=resolve_precision(cfg.loop.precision, device))
    model, method, transform = build(cfg, dist)
    if cfg.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs GPUs: torch's SyncBatchNorm has no CPU implementation")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        method.model = model
    model = model.to(device, memory_format=torch.channels_last) if cfg.channels_last else model.to(device)
    preprocess = preprocess_for(cfg)

    paths = training_images(cfg)
    collate = None
    augment = cfg.augment or AugmentConfig.for_size(cfg.image_size)
    if cfg.batch_augment and cfg.method in ("simclr", "moco") and augment.blur_prob == 0:
        dataset = ImagePixels(paths, side=2 * cfg.image_size, seed=cfg.seed, cache_mb=cfg.cache_mb)
        # fill 0: what a rotation uncovers is black, as with torchvision's RandomRotation
        collate = ViewsCollate(BatchAugment(augment, cfg.image_size, preprocess.mean, preprocess.std, fill=0.0),
                               cfg.seed)
    else:
        dataset = ImageDataset(paths, transform, seed=cfg.seed)
    batch_size = min(cfg.batch_size, len(dataset) // dist.world_size)
    monitor = knn_monitor(cfg, preprocess, device) if dist.is_main else None
    trainer = Trainer(method, cfg.loop, device, dist, checkpoint=cfg.checkpoint_path, log_file=cfg.log_file,
                      monitor=monitor)
    if dist.is_main:
        n_params = sum(p.numel() for p in unwrap(model).backbone.parameters()) / 1e6
        print(f"training {cfg.method} on {cfg.backbone} ({n_params:.2f}M backbone params) with {len(dataset)} images "
              f"from {cfg.data} at {cfg.image_size} px, batch {batch_size} x {dist.world_size} process(es), "
              f"{cfg.loop.steps} steps, device {device}")

    before = None
    if cfg.resume:
        start = trainer.load_checkpoint(cfg.resume)
        if dist.is_main:
            print(f"resumed from {cfg.resume} at step {start}")
    elif monitor is not None:
        before = _monitored(trainer)
    loader = keyed_loader(dataset, batch_size, cfg.seed, dist, device, cfg.workers, trainer.step, collate)

    started = time.perf_counter()
    history = trainer.fit(loader)
    seconds = time.perf_counter() - started
    if not dist.is_main:
        return SSLTrainResult(None, None, None, history, seconds, len(dataset))

    after = _monitored(trainer) if monitor is not None else None
    backbone = unwrap(model).backbone.eval()
    run_summary = {
        "method": cfg.method,
        "data": str(cfg.data),
        "images": len(dataset),
        "bad_files": len(dataset.bad_files),
        "config": jsonable(asdict(cfg)),
        "temperature": temperature_for(cfg) if cfg.method != "rotnet" else None,
        "world_size": dist.world_size,
        "final_loss": history[-1]["loss"] if history and "loss" in history[-1] else None,
        "train_seconds": round(seconds, 1),
        "knn": {"untrained": before, "trained": after, "k": cfg.knn_k, "val_folder": jsonable(cfg.val_folder)},
        "torch": torch.__version__,
        "host": platform.node(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fp = save_encoder(cfg.out, kind=cfg.method, arch={"backbone": cfg.backbone}, state_dict=backbone.state_dict(),
                      preprocess=preprocess, dim=backbone.out_dim, run=run_summary)
    if after is not None:
        shown = "n/a" if before is None else f"{before:.3f}"
        print(f"\nk-NN (k={cfg.knn_k}) accuracy on {cfg.val_folder}: untrained {shown}, trained {after:.3f}")
    print(f"\nwrote {cfg.out} (fingerprint {fp[:16]}) after {seconds:.0f} s of training")
    return SSLTrainResult(fp, before, after, history, seconds, len(dataset))


def _monitored(trainer: Trainer) -> float:
    values = trainer._run_monitor()
    return float(next(iter(values.values())))
