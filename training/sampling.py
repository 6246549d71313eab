"""A sampler whose position is a step number, so a resumed run reads exactly the same batches.

Each epoch is a permutation of the dataset drawn from ``seed + epoch``. Global batch
``b`` of an epoch is ``perm[b*G:(b+1)*G]`` with ``G = batch_size * world_size``; rank
``r`` takes rows ``[r*batch_size, (r+1)*batch_size)`` of it, so one process with batch
``G`` sees the same samples as ``world_size`` processes with batch ``batch_size``.

The sampler yields *keys*, ``epoch * n + index``: the dataset uses the key to seed
that sample's augmentation, which makes augmentations independent of worker count
and of where a run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def key_index(key: int, n: int) -> int:
    return key % n


class StepSampler(Sampler[int]):
    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.global_batch = batch_size * world_size
        if self.global_batch > n:
            raise ValueError(f"a global batch of {self.global_batch} needs at least that many samples (have {n})")
        self.steps_per_epoch = n // self.global_batch  # the incomplete last batch is dropped

    def __iter__(self) -> Iterator[int]:
        epoch, batch = divmod(self.start_step, self.steps_per_epoch)
        while True:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
            for b in range(batch, self.steps_per_epoch):
                start = b * self.global_batch + self.rank * self.batch_size
                for i in perm[start : start + self.batch_size].tolist():
                    yield epoch * self.n + i
            epoch, batch = epoch + 1, 0
