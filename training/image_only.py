"""What the image-only methods (``python -m training simclr|moco|rotnet``) share: they train an encoder without labels.

They share everything but their task: the data (a folder or a manifest of images, each item's
views seeded by its sampler key), the backbones, the options below, the k-NN monitor and the
encoder file (the backbone alone). A method module supplies its config (an ``ImageOnlyConfig``
with its own options) and ``build(cfg, dist) -> Task`` (its model, step and views), and registers
``image_only.method(...)``; ``training.runner`` does the rest.

Holding out an evaluation split: when ``data`` is a folder of class sub-folders and
``holdout > 0``, the run trains on the images that ``training.probe.stratified_split``
(same fraction and seed) puts in *train*, so ``python -m training eval --folder`` with the
same ``--test-fraction`` and ``--split-seed`` tests on images the encoder never saw.
The labels choose the split only; training never reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.distributed import DistInfo
from training.augment import AugmentConfig
from training.batch_augment import BatchAugment
from training.data import ImageDataset, ImagePixels, ViewsCollate, labelled_folder, list_images, manifest_images
from training.distributed import unwrap
from training.encoder import Encoder, Preprocess, backbone_encoder
from training.loop import jsonable, keyed_loader
from training.method import DEFAULT_DEVICE, Job, Method, RunFiles
from training.options import backbone_spec, column_values, option

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# the command line's defaults of the shared loop options for the image-only methods (``method(..., **loop)``
# overrides them for one)
LOOP_DEFAULTS = dict(grad_clip=0.0, steps=500, lr=2e-3, weight_decay=1e-4, warmup=25)


@dataclass
class ImageOnlyConfig(RunFiles):
    data: Path = option(help="a folder of images (searched recursively) or a JSONL/CSV manifest")
    out: Path = option(help="encoder file to write (.safetensors)")
    image_key: str = option("file", "manifest column with the image path")
    where: dict[str, str] = option(factory=dict, help="train only on manifest rows whose column has this value "
                                   "(repeatable)", action="append", cli_default=[], parse=column_values,
                                   metavar="COLUMN=VALUE")
    holdout: float = option(0.0, "--data is a folder of class sub-folders: leave out this stratified fraction (the "
                            "test split of 'eval --folder' with the same --test-fraction and --split-seed)")
    split_seed: int = option(0, "seed of the held-out / monitor split")
    # a 2x2 grid of pooled features (512 wide) rather than one average: on emoji artwork never trained on,
    # SimCLR went from below raw pixels to above them with it (bench/README.md, ssl_quality)
    backbone: dict[str, Any] = option(factory=lambda: {"name": "small-cnn", "grid": 2}, cli_default="small-cnn,grid=2",
                                      parse=backbone_spec,
                                      help="small-cnn[,width=32,depth=3,norm=bn,grid=2] | resnet18[,small_stem=true] | "
                                           "resnet50 | timm:MODEL | a JSON object")
    image_size: int = option(32, "training and embedding input size (px)")
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    augment: AugmentConfig | None = None  # None: AugmentConfig.for_size(image_size)
    sync_bn: bool = option(False, "SyncBatchNorm across torchrun processes (GPUs)")
    channels_last: bool = option(False, "NHWC weights (faster convolutions on CPUs)")
    threads: int = option(0, "CPU threads of the training process (0: torch's default; 1 leaves cores to the workers)")
    batch_size: int = option(256, "per process")
    workers: int = option(2, "DataLoader worker processes")
    seed: int = option(0)
    device: str = option("cpu", cli_default=DEFAULT_DEVICE)
    val_folder: Path | None = option(None, "labelled folder (class sub-folders) for the k-NN monitor")
    val_fraction: float = option(0.2, "the monitor's query fraction of --val-folder (the rest is the k-NN memory "
                                 "bank)")
    knn_k: int = option(20, "neighbours of the k-NN monitor")
    knn_temperature: float = 0.07

    @property
    def augmentation(self) -> AugmentConfig:
        return self.augment or AugmentConfig.for_size(self.image_size)


@dataclass
class Task:
    """What an image-only method builds: its model (holding ``.backbone``), its step and how it sees images."""

    model: nn.Module
    step: Any  # training.loop's method protocol
    transform: Callable  # PIL image -> its views, one image at a time (``training.data.ImageDataset``)
    # two views: augment whole batches of images decoded once into memory (``training.batch_augment``)
    batched: bool = False
    cache_mb: float = 1024.0  # the in-memory images' limit
    summary: dict[str, Any] = field(default_factory=dict)  # the method's entries in the run summary


@dataclass
class SSLTrainResult:
    fingerprint: str | None
    knn_untrained: float | None
    knn_trained: float | None
    history: list[dict[str, float]]
    seconds: float
    images: int


def method(name: str, help: str, config: type, build: Callable[[Any, DistInfo], Task], **loop: Any) -> Method:
    """The registration of an image-only method: ``build(cfg, dist)`` makes its Task; ``loop`` overrides
    ``LOOP_DEFAULTS`` for it."""

    def configure(values: dict[str, Any], augment: dict[str, Any]) -> ImageOnlyConfig:
        return config(**values, augment=AugmentConfig.for_size(values["image_size"], **augment))

    return Method(name, help, config, lambda cfg, dist, device: prepare(name, build, cfg, dist, device), configure,
                  {**LOOP_DEFAULTS, **loop})


def training_images(cfg: ImageOnlyConfig) -> list[Path]:
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


def preprocess_for(cfg: ImageOnlyConfig) -> Preprocess:
    # bilinear, as SimCLR's crops and torchvision's RandomResizedCrop: the same resampling in training and use
    return Preprocess(size=cfg.image_size, mean=list(cfg.mean), std=list(cfg.std), interpolation="bilinear")


def knn_measure(cfg: ImageOnlyConfig, preprocess: Preprocess) -> Callable[[Encoder], float]:
    """k-NN accuracy of an encoder on the labelled ``val_folder`` (memory bank / queries split)."""
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

    def measure(encoder: Encoder) -> float:
        feats = encoder.encode_tensors(batch)
        return knn_accuracy(feats[bank], labels[bank], feats[queries], labels[queries], cfg.knn_k, cfg.knn_temperature)

    return measure


def prepare(name: str, build: Callable[[Any, DistInfo], Task], cfg: ImageOnlyConfig, dist: DistInfo,
            device: torch.device) -> Job:
    if cfg.threads:
        # On a small CPU machine the DataLoader workers need cores too: one thread for the model and the
        # rest for augmentation beats every process fighting over every core.
        torch.set_num_threads(cfg.threads)
    task = build(cfg, dist)
    model = task.model
    if cfg.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs GPUs: torch's SyncBatchNorm has no CPU implementation")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        task.step.model = model
    model = model.to(device, memory_format=torch.channels_last) if cfg.channels_last else model.to(device)
    preprocess = preprocess_for(cfg)

    paths = training_images(cfg)
    collate = None
    augment = cfg.augmentation
    if task.batched and augment.blur_prob == 0:
        dataset = ImagePixels(paths, side=2 * cfg.image_size, seed=cfg.seed, cache_mb=task.cache_mb)
        # fill 0: what a rotation uncovers is black, as with torchvision's RandomRotation
        collate = ViewsCollate(BatchAugment(augment, cfg.image_size, preprocess.mean, preprocess.std, fill=0.0),
                               cfg.seed)
    else:
        dataset = ImageDataset(paths, task.transform, seed=cfg.seed)
    batch_size = min(cfg.batch_size, len(dataset) // dist.world_size)
    measure = knn_measure(cfg, preprocess) if dist.is_main and cfg.val_folder is not None else None
    n_params = sum(p.numel() for p in unwrap(model).backbone.parameters()) / 1e6

    def summary(before, after) -> dict[str, Any]:
        return {"images": len(dataset), "bad_files": len(dataset.bad_files), **task.summary,
                "knn": {"untrained": before, "trained": after, "k": cfg.knn_k, "val_folder": jsonable(cfg.val_folder)}}

    def report(before, after) -> str:
        if after is None:
            return ""
        shown = "n/a" if before is None else f"{before:.3f}"
        return f"\nk-NN (k={cfg.knn_k}) accuracy on {cfg.val_folder}: untrained {shown}, trained {after:.3f}"

    return Job(
        step=task.step,
        encoder=lambda trained: backbone_encoder(trained.backbone, name, preprocess, device, batch_size=256),
        loader=lambda start: keyed_loader(dataset, batch_size, cfg.seed, dist, device, cfg.workers, start, collate),
        described=f"training {name} on {cfg.backbone} ({n_params:.2f}M backbone params) with {len(dataset)} images "
                  f"from {cfg.data} at {cfg.image_size} px, batch {batch_size} x {dist.world_size} process(es), "
                  f"{cfg.loop.steps} steps, device {device}",
        arch={"backbone": cfg.backbone},
        result=lambda fp, before, after, history, seconds: SSLTrainResult(fp, before, after, history, seconds,
                                                                          len(dataset)),
        monitor=(lambda encoder: {f"knn{cfg.knn_k}": measure(encoder)}) if measure else None,
        measure=measure,
        summary=summary,
        report=report,
    )

