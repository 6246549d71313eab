"""Datasets for training: image-caption pairs from a manifest, images alone from a folder or a manifest.

Items are addressed by the keys of ``training.sampling.StepSampler`` (``epoch * n + i``);
each key seeds its own augmentation, so a sample looks the same whichever worker
loads it and whether or not the run was resumed. A file that cannot be decoded is
replaced by the next good one and counted in ``bad_files``, so one broken image never
stops a run.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from PIL import Image
from torch.utils.data import Dataset

from training.manifest import read_manifest, resolve

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

T = TypeVar("T")


@contextmanager
def _seeded_cpu_rng(seed: int):
    """Run the block under the CPU generator seeded with ``seed``, then restore its state.

    Only the CPU generator: the transforms draw from nothing else. ``torch.manual_seed``
    would also seed every accelerator backend (CUDA, XPU, MTIA), which costs ~0.2 ms per
    call in a DataLoader worker, i.e. ~30 ms of CPU per batch of 128; this costs ~4 µs.
    """
    generator = torch.default_generator
    state = generator.get_state()
    try:
        generator.manual_seed(seed)
        yield
    finally:
        generator.set_state(state)


class KeyedImages(Dataset):
    """Images addressed by sampler keys, each key drawing its augmentation from its own seed."""

    def __init__(self, paths: Sequence[Path], seed: int = 0) -> None:
        if not paths:
            raise ValueError("no images to train on")
        self.paths = list(paths)
        self.seed = seed
        self.bad_files: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as im:
            im.load()
            return im

    def draw(self, key: int, make: Callable[[int, Image.Image], T]) -> T:
        """``make(j, image)`` for item ``key % n`` (or the next readable one) under the key's own RNG seed."""
        i = key % len(self)
        for offset in range(len(self)):
            j = (i + offset) % len(self)
            try:
                with _seeded_cpu_rng(self.seed * 1_000_003 + key):
                    return make(j, self.load_image(j))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                if self.paths[j] not in self.bad_files:
                    log.warning("skipping unreadable image %s: %s", self.paths[j], exc)
                    self.bad_files.add(self.paths[j])
        raise RuntimeError("no readable image in the dataset")


class ImageTextDataset(KeyedImages):
    """(image tensor (3, H, W), tokens (ctx,)) pairs from a JSONL/CSV manifest."""

    def __init__(
        self,
        manifest: str | Path,
        image_key: str,
        caption_key: str,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        seed: int = 0,
    ) -> None:
        rows = read_manifest(manifest, required=(image_key, caption_key))
        super().__init__([resolve(manifest, str(r[image_key])) for r in rows], seed)
        self.captions = [str(r[caption_key]) for r in rows]
        self.rows = rows
        self.transform = transform
        self.tokenizer = tokenizer

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        j, image = self.draw(key, lambda j, im: (j, self.transform(im)))
        return image, self.tokenizer([self.captions[j]])[0]


class ImageDataset(KeyedImages):
    """Images without labels or captions: each item is the tuple of views ``transform`` makes of it,
    e.g. two augmented (3, H, W) views for SimCLR and MoCo (``training.augment.Views``), one for RotNet."""

    def __init__(self, paths: Sequence[Path],
                 transform: Callable[[Image.Image], torch.Tensor | tuple[torch.Tensor, ...]], seed: int = 0) -> None:
        super().__init__(paths, seed)
        self.transform = transform

    def __getitem__(self, key: int) -> tuple[torch.Tensor, ...]:
        views = self.draw(key, lambda j, im: self.transform(im))
        return views if isinstance(views, tuple) else (views,)


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, by suffix), in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def labelled_folder(root: str | Path) -> tuple[list[Path], list[str]]:
    """Images in class sub-folders (``root/LABEL/...``): their paths and labels (the sub-folder names)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    paths, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in list_images(sub):
            paths.append(path)
            labels.append(sub.name)
    if not paths:
        raise ValueError(f"{root} has no images in class sub-folders (expected {root}/LABEL/IMAGE)")
    return paths, labels


def manifest_images(manifest: str | Path, image_key: str = "file", where: dict[str, str] | None = None) -> list[Path]:
    """The image paths of a manifest's rows whose columns equal ``where``'s values."""
    where = where or {}
    rows = [r for r in read_manifest(manifest, required=(image_key,))
            if all(str(r.get(k)) == v for k, v in where.items())]
    if not rows:
        raise ValueError(f"no rows of {manifest} match {where}")
    return [resolve(manifest, str(r[image_key])) for r in rows]
