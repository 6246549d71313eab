"""Datasets for training: image-caption pairs from a manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from training.manifest import read_manifest, resolve

log = logging.getLogger(__name__)


class ImageTextDataset(Dataset):
    """(image tensor (3, H, W), tokens (ctx,)) pairs from a JSONL/CSV manifest.

    A file that cannot be decoded is replaced by the next good one and counted in
    ``bad_files``, so one broken image never stops a run.

    Items are addressed by the keys of ``training.sampling.StepSampler`` (``epoch * n + i``);
    each key seeds its own augmentation, so a sample looks the same whichever worker
    loads it and whether or not the run was resumed.
    """

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
        self.paths = [resolve(manifest, str(r[image_key])) for r in rows]
        self.captions = [str(r[caption_key]) for r in rows]
        self.rows = rows
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.bad_files: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as im:
            im.load()
            return im

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = key % len(self)
        for offset in range(len(self)):
            j = (i + offset) % len(self)
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed * 1_000_003 + key)
                    image = self.transform(self.load_image(j))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                if self.paths[j] not in self.bad_files:
                    log.warning("skipping unreadable image %s: %s", self.paths[j], exc)
                    self.bad_files.add(self.paths[j])
                continue
            return image, self.tokenizer([self.captions[j]])[0]
        raise RuntimeError("no readable image in the dataset")
