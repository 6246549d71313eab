"""Datasets for training: image-caption pairs from a manifest, images alone from a folder or a manifest.

Items are addressed by the keys of ``training.sampling.StepSampler`` (``epoch * n + i``);
each key seeds its own augmentation, so a sample looks the same whichever worker
loads it and whether or not the run was resumed. A file that cannot be decoded is
replaced by the next good one and counted in ``bad_files``, so one broken image never
stops a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from core.manifest import read_manifest, resolve
from training.images import to_rgb

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

    # -- 8-bit square pixels, kept in memory when they fit (for batched augmentation) ----------------
    side: int = 64
    pixels: list[torch.Tensor | None] | None = None

    def cache_pixels(self, cache_mb: float) -> None:
        """Decode every image once into ``self.pixels`` unless that would take more than ``cache_mb`` MiB."""
        if len(self) * 3 * self.side**2 / 2**20 <= cache_mb:
            self.pixels = [self._cached(i) for i in range(len(self))]

    def _cached(self, i: int) -> torch.Tensor | None:
        try:
            return self.square_pixels(i)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log.warning("skipping unreadable image %s: %s", self.paths[i], exc)
            self.bad_files.add(self.paths[i])
            return None

    def square_pixels(self, i: int) -> torch.Tensor:
        """Image ``i`` as uint8 (3, side, side): flattened onto white, shortest side resized, centre-cropped."""
        image = to_rgb(KeyedImages.load_image(self, i))
        scale = self.side / min(image.size)
        w, h = max(self.side, round(image.width * scale)), max(self.side, round(image.height * scale))
        if (w, h) != image.size:
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - self.side) // 2, (h - self.side) // 2
        image = image.crop((left, top, left + self.side, top + self.side))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()

    def _pixels(self, i: int) -> torch.Tensor:
        if self.pixels is None:
            return self.square_pixels(i)
        if self.pixels[i] is None:
            raise OSError(f"{self.paths[i]} could not be decoded")
        return self.pixels[i]

    def draw_pixels(self, key: int, make: Callable[[int], T]) -> T:
        """``make(j)`` for item ``key % n`` or the next readable one, under the key's own RNG seed, where
        ``make`` reads ``self._pixels``: cached items are known readable without opening a file."""
        if self.pixels is None:
            return self.draw(key, lambda j, _image: make(j))
        n = len(self)
        for offset in range(n):
            j = (key + offset) % n
            if self.pixels[j] is not None:
                with _seeded_cpu_rng(self.seed * 1_000_003 + key):
                    return make(j)
        raise RuntimeError("no readable image in the dataset")


class ImageTextDataset(KeyedImages):
    """Image-caption pairs from a JSONL/CSV manifest.

    ``views == 1``: each item is (image (3, H, W) from ``transform``, tokens (ctx,)), CLIP's pair.
    ``views == 2``: each item is (pixels, partner pixels, tokens, group, key): uint8 (3, S, S) images
    (shortest side resized to ``side``, centre-cropped; ``transform`` is not used: ``GroupedCollate``
    augments the whole batch), the group id (int64 scalar) and the sampler key. Rows with the same
    ``group_key`` value, or without a group key the same caption, share a group; ``group_key="__row__"``
    makes every row its own group. The partner is another member of the group when there is one (e.g.
    the other vendor's drawing of the same emoji), the same image otherwise. ``caption_variant_keys``
    name columns holding more captions of a row (a string or a list of strings, e.g. ``short_names``);
    each draw then picks one of the row's captions at random.

    ``cache`` (``views == 2``): decode every image once into memory, unless that would pass
    ``cache_mb``; on small sets, decoding PNGs was most of a worker's time.
    """

    def __init__(
        self,
        manifest: str | Path,
        image_key: str,
        caption_key: str,
        transform: Callable[[Image.Image], torch.Tensor] | None,
        tokenizer: Callable[[list[str]], torch.Tensor],
        seed: int = 0,
        views: int = 1,
        group_key: str | None = None,
        caption_variant_keys: Sequence[str] = (),
        side: int = 64,
        cache_mb: float = 1024.0,
    ) -> None:
        required = (image_key, caption_key) + ((group_key,) if group_key and group_key != ROW else ())
        rows = read_manifest(manifest, required=required)
        super().__init__([resolve(manifest, str(r[image_key])) for r in rows], seed)
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        self.captions = [str(r[caption_key]) for r in rows]
        self.variants = [_captions_of(r, caption_key, caption_variant_keys) for r in rows]
        self.rows = rows
        self.transform = transform
        self.tokenizer = tokenizer
        self.views, self.side = views, side
        if group_key == ROW:
            keys = [str(i) for i in range(len(rows))]
        else:
            keys = [str(r[group_key]) for r in rows] if group_key else self.captions
        ids: dict[str, int] = {}
        self.groups = torch.tensor([ids.setdefault(k, len(ids)) for k in keys], dtype=torch.int64)
        members: dict[int, list[int]] = {}
        for i, g in enumerate(self.groups.tolist()):
            members.setdefault(g, []).append(i)
        self.members = [members[g] for g in self.groups.tolist()]
        if views == 2:
            self.cache_pixels(cache_mb)

    def caption(self, j: int) -> str:
        options = self.variants[j]
        return options[0] if len(options) == 1 else options[int(torch.randint(len(options), ()))]

    def __getitem__(self, key: int):
        if self.views == 1:
            image, text = self.draw(key, lambda j, im: (self.transform(im), self.caption(j)))
            return image, self.tokenizer([text])[0]

        def make(j):
            others = [m for m in self.members[j] if m != j]
            partner = others[int(torch.randint(len(others), ()))] if others else j
            try:
                second = self._pixels(partner)
            except OSError:  # an unreadable partner: the item's own image again
                second = self._pixels(j)
            return j, self._pixels(j), second, self.caption(j)

        j, first, second, text = self.draw_pixels(key, make)
        return first, second, self.tokenizer([text])[0], self.groups[j], torch.tensor(key)


ROW = "__row__"  # group_key value that makes every row its own group


class GroupedCollate:
    """Collate ``ImageTextDataset(views=2)`` items into [view_1, view_2 (B, 3, s, s) float, tokens (B, ctx),
    groups (B,)], augmenting each whole batch with ``augment`` (``training.batch_augment``) under a
    generator seeded by the batch's first sampler key: the same views on every run and resumption."""

    def __init__(self, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor], seed: int = 0) -> None:
        self.augment, self.seed = augment, seed

    def __call__(self, items: list[tuple]) -> list[torch.Tensor]:
        first, second, tokens, groups, keys = (torch.stack(column) for column in zip(*items))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(keys[0]) + 7)
        return [self.augment(first, g), self.augment(second, g), tokens, groups]


def _captions_of(row: dict, caption_key: str, variant_keys: Sequence[str]) -> list[str]:
    """The row's caption followed by the non-empty, distinct captions in its variant columns."""
    out = [str(row[caption_key])]
    for key in variant_keys:
        value = row.get(key)
        for text in (value if isinstance(value, (list, tuple)) else [value]):
            if text not in (None, "") and str(text) not in out:
                out.append(str(text))
    return out


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


class ImagePixels(KeyedImages):
    """Images alone as (uint8 (3, side, side) pixels, sampler key) items, decoded once into memory when
    they fit in ``cache_mb``; ``ViewsCollate`` makes the augmented views of a whole batch at once."""

    def __init__(self, paths: Sequence[Path], side: int, seed: int = 0, cache_mb: float = 1024.0) -> None:
        super().__init__(paths, seed)
        self.side = side
        self.cache_pixels(cache_mb)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw_pixels(key, self._pixels), torch.tensor(key)


class ViewsCollate:
    """``ImagePixels`` items -> [view_1, ..., view_n] (B, 3, s, s) float, each view of the batch made by
    ``augment`` under a generator seeded by the batch's first key (the same views on every run)."""

    def __init__(self, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor], seed: int = 0,
                 n: int = 2) -> None:
        self.augment, self.seed, self.n = augment, seed, n

    def __call__(self, items: list[tuple]) -> list[torch.Tensor]:
        pixels, keys = (torch.stack(column) for column in zip(*items))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(keys[0]) + 7)
        return [self.augment(pixels, g) for _ in range(self.n)]


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
