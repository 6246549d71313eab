"""Decode images in worker processes and embed them in batches.

reader (SourceItem) -> DecodeDataset (bytes, hash, tensor; in DataLoader workers)
-> encoder.encode_tensors (batches) -> EmbeddedBatch
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from index.decode import BadImage, DecodeLimits, open_image
from index.fetch import FetchError, FetchLimits, read_bytes
from index.source_item import SourceItem


@dataclass
class Decoded:
    position: int
    tensor: torch.Tensor | None
    content_hash: str | None
    error: str | None = None
    unchanged: bool = False  # the catalog already holds this content's vector: not decoded


@dataclass
class EmbeddedBatch:
    items: list[SourceItem]
    content_hashes: list[str]
    vectors: np.ndarray  # float32 (B, dim), L2-normalised
    failures: list[tuple[SourceItem, str]] = field(default_factory=list)
    unchanged: list[tuple[SourceItem, str]] = field(default_factory=list)  # (item, content hash), not embedded


class DecodeDataset(Dataset):
    """Reads, hashes, decodes and preprocesses one item; a bad file yields an error, never an exception.

    ``known`` maps a source to the content hash whose vector the catalog already holds: such an item
    is hashed but neither decoded nor embedded again."""

    def __init__(self, items: Sequence[SourceItem], transform: Callable, limits: DecodeLimits,
                 known: dict[str, str] | None = None, fetch: FetchLimits = FetchLimits()) -> None:
        self.items, self.transform, self.limits, self.fetch = items, transform, limits, fetch
        self.known = known or {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        try:
            data = read_bytes(self.items[i].path, self.fetch)
        except FetchError as exc:
            return Decoded(i, None, None, str(exc))
        digest = hashlib.sha256(data).hexdigest()
        if self.known.get(self.items[i].uri) == digest:
            return Decoded(i, None, digest, unchanged=True)
        try:
            tensor = self.transform(open_image(data, self.limits))
        except BadImage as exc:
            return Decoded(i, None, digest, f"{exc.reason}: {exc}")
        except (OSError, ValueError) as exc:
            return Decoded(i, None, digest, f"corrupt: {exc}")
        return Decoded(i, tensor, digest)


def _yield_to_the_model(worker_id: int) -> None:
    os.nice(19)


def _collate(batch: list[Decoded]) -> list[Decoded]:
    return batch


def embed_items(
    encoder,
    items: Sequence[SourceItem],
    batch_size: int = 64,
    workers: int = 2,
    limits: DecodeLimits = DecodeLimits(),
    known: dict[str, str] | None = None,
    fetch: FetchLimits = FetchLimits(),
) -> Iterator[EmbeddedBatch]:
    """Yield one EmbeddedBatch per ``batch_size`` items, in input order."""
    dataset = DecodeDataset(items, encoder.image_pixels, limits, known, fetch)  # uint8: normalised per batch below
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        pin_memory=encoder.device.type == "cuda",
                        worker_init_fn=_yield_to_the_model if encoder.device.type == "cpu" else None)
    for decoded in loader:
        good = [d for d in decoded if d.tensor is not None]
        unchanged = [(items[d.position], d.content_hash) for d in decoded if d.unchanged]
        failures = [(items[d.position], d.error or "unknown") for d in decoded if d.tensor is None and not d.unchanged]
        vectors = (encoder.encode_tensors(encoder.tensors_from_pixels(torch.stack([d.tensor for d in good]))) if good
                   else np.zeros((0, encoder.dim), dtype=np.float32))
        yield EmbeddedBatch([items[d.position] for d in good], [d.content_hash for d in good], vectors, failures,
                            unchanged)
