"""Image-caption pairs streamed from webdataset tar shards (the format of CC3M, LAION and friends).

A shard is a tar file whose members are grouped by key: ``000123.jpg`` and ``000123.txt``
are one sample. ``--data`` names shards with brace notation (``shards/{00000..00331}.tar``)
or a folder of ``*.tar`` files (``core.shards``); ``--image-key`` is the image member's extension (``jpg``,
or alternatives such as ``jpg;png;webp``) and ``--caption-key`` the caption's (``txt``).

The stream is the one open_clip_train uses for shards: each DataLoader worker of each
process draws shards at random with replacement (``webdataset.ResampledShards``; its
seed mixes the run's seed, the rank and the worker), reads them sequentially, and
shuffles samples in a buffer. Decoding and augmentation happen in the workers; a sample
whose image cannot be decoded or that lacks a key is logged, counted per worker and
skipped. On ``--resume`` the model, optimiser, schedule and RNGs continue exactly (see
``training.loop``), and the shard stream starts afresh from a seed that includes the
resumed step: a stream of random shards has no position to return to, as in open_clip_train.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import torch
from PIL import Image

log = logging.getLogger(__name__)


class DecodePair:
    """A webdataset sample (dict of raw members) -> (image tensor (3, H, W), tokens (ctx,)), or None."""

    def __init__(self, image_key: str, caption_key: str, transform: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.image_keys = [k.strip().lower() for k in image_key.split(";") if k.strip()]
        self.caption_key = caption_key.lower()
        self.transform, self.tokenizer = transform, tokenizer
        self.bad = 0  # samples skipped by this worker

    def image_and_caption(self, sample: dict) -> tuple[Image.Image, str] | None:
        image_key = next((k for k in self.image_keys if k in sample), None)
        caption = sample.get(self.caption_key)
        where = f"{sample.get('__key__')} in {sample.get('__url__')}"
        if image_key is None or caption is None:
            return self._skip(f"sample {where} has no {'/'.join(self.image_keys)} or no {self.caption_key}")
        try:
            with Image.open(io.BytesIO(sample[image_key])) as im:
                im.load()
                image = im.copy()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return self._skip(f"unreadable image {where}: {exc}")
        text = caption.decode("utf-8", errors="replace") if isinstance(caption, bytes) else str(caption)
        return image, text.strip()

    def _skip(self, why: str) -> None:
        self.bad += 1
        log.warning("skipping %s (%d skipped by this worker)", why, self.bad)
        return None

    def __call__(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        pair = self.image_and_caption(sample)
        if pair is None:
            return None
        image, text = pair
        return self.transform(image), self.tokenizer([text])[0]


def shard_pipeline(urls: list[str], decode: DecodePair, batch_size: int, seed: int,
                   shuffle_buffer: int = 1000):
    """An endless stream of collated batches [(B, 3, H, W) images, (B, ctx) tokens] for a DataLoader
    with ``batch_size=None``. ``seed`` should differ per process (and per resumed start)."""
    import webdataset as wds

    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seed),
        wds.map(decode),
        wds.select(lambda pair: pair is not None),
        wds.batched(batch_size, partial=False),
    )


def first_pairs(urls: list[str], decode: DecodePair, n: int) -> tuple[list[Image.Image], list[str]]:
    """The first ``n`` readable (image, caption) pairs of the shards in order (for the before/after report)."""
    import webdataset as wds

    images, captions = [], []
    samples: Iterator[dict] = iter(wds.DataPipeline(wds.SimpleShardList(urls),
                                                    wds.tarfile_to_samples(handler=wds.warn_and_continue)))
    for sample in samples:
        pair = decode.image_and_caption(sample)
        if pair is not None:
            images.append(pair[0])
            captions.append(pair[1])
            if len(images) == n:
                break
    return images, captions
