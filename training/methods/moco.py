"""``python -m training moco``, MoCo v2: a query encoder trained against a momentum-averaged key encoder and a
queue of past keys.

The key encoder (backbone + head) and the queue live in the model as a frozen copy and
buffers, so checkpoints hold them and a resumed run continues exactly. The Trainer calls
``after_step`` after each optimiser step; that is where the key encoder follows the query
encoder. The encoder file keeps the query backbone only.

Not done here: MoCo's shuffled batch norm across GPUs. Each process's key encoder computes
batch statistics over its own keys, which the MoCo paper found can leak information with
large models; the small models this project trains on CPUs did not show it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import DistInfo
from training import image_only
from training.augment import Views, simclr_transform
from training.backbones import build_backbone
from training.distributed import unwrap
from training.image_only import ImageOnlyConfig, Task, preprocess_for
from training.loop import ONE_PROCESS
from training.losses import gather_no_grad, info_nce_with_queue
from training.methods.simclr import ProjectionHead
from training.options import option


class MoCoModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_dim: int = 512, out_dim: int = 128, queue_size: int = 4096,
                 head_bn: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.out_dim, hidden_dim, out_dim, head_bn)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_head = copy.deepcopy(self.head)
        for p in [*self.key_backbone.parameters(), *self.key_head.parameters()]:
            p.requires_grad_(False)
        # The queue starts as random unit vectors (as in MoCo); it is full of real keys after K / B steps.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, out_dim), dim=1))  # (K, out_dim)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next row to overwrite

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, out_dim) of ``x_q`` with gradient, keys (B, out_dim) of ``x_k`` without; both normalised."""
        q = F.normalize(self.head(self.backbone(x_q)), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_head(self.key_backbone(x_k)), dim=1)
        return q, k

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """key <- momentum * key + (1 - momentum) * query, for every parameter; buffers (BN statistics) copied."""
        for online, target in ((self.backbone, self.key_backbone), (self.head, self.key_head)):
            for p_q, p_k in zip(online.parameters(), target.parameters()):
                p_k.mul_(momentum).add_(p_q.detach(), alpha=1.0 - momentum)
            for b_q, b_k in zip(online.buffers(), target.buffers()):
                b_k.copy_(b_q)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (n, out_dim) over the oldest rows, wrapping around the end of the queue."""
        size = self.queue.shape[0]
        keys = keys[-size:].to(self.queue.dtype)  # more keys than the queue holds: keep the newest
        n, ptr = keys.shape[0], int(self.queue_ptr)
        rows = (ptr + torch.arange(n, device=self.queue.device)) % size
        self.queue[rows] = keys
        self.queue_ptr.fill_((ptr + n) % size)


@dataclass
class MoCoMethod:
    model: nn.Module  # a MoCoModel (the Trainer may wrap it in DDP)
    temperature: float = 0.2
    momentum: float = 0.99
    symmetric: bool = False  # also score view 2's queries against view 1's keys (twice the work per step)
    rank: int = 0
    world_size: int = 1

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        view1, view2 = batch  # (B, 3, H, W) each
        inner: MoCoModel = unwrap(self.model)
        negatives = inner.queue.clone()  # (K, d): a snapshot, since the queue changes before backward
        if self.symmetric:
            q, k = self.model(torch.cat([view1, view2]), torch.cat([view2, view1]))  # (2B, d) each
        else:
            q, k = self.model(view1, view2)  # (B, d) each
        loss = info_nce_with_queue(q, k, negatives, self.temperature)
        inner.enqueue(gather_no_grad(k[: view1.shape[0]].float(), self.world_size))  # keys of view 2
        return {"loss": loss}

    def after_step(self) -> None:
        unwrap(self.model).momentum_update(self.momentum)


@dataclass
class MoCoConfig(ImageOnlyConfig):
    temperature: float = option(0.2, "contrastive temperature")
    proj_hidden: int = option(512, "projection head hidden width")
    proj_dim: int = option(128, "projection head output width")
    momentum: float = option(0.99, "key encoder momentum")
    queue_size: int = option(4096, "negatives kept from earlier batches")
    symmetric: bool = option(False, "symmetrised loss (both views as queries)")
    batch_augment: bool = option(True, "decode the images once into memory and augment whole batches at once "
                                 "(without blur); --no-batch-augment: torchvision's transforms one view at a time")
    cache_mb: float = option(1024.0, "the in-memory images' limit (MiB)", cli_default=1024)


def build(cfg: MoCoConfig, dist: DistInfo = ONE_PROCESS) -> Task:
    model = MoCoModel(build_backbone(cfg.backbone), cfg.proj_hidden, cfg.proj_dim, cfg.queue_size)
    step = MoCoMethod(model, cfg.temperature, cfg.momentum, cfg.symmetric, dist.rank, dist.world_size)
    transform = Views(simclr_transform(preprocess_for(cfg), cfg.augmentation))
    return Task(model, step, transform, batched=cfg.batch_augment, cache_mb=cfg.cache_mb,
                summary={"temperature": cfg.temperature})


METHOD = image_only.method("moco", "train a MoCo v2 image encoder (no labels): momentum key encoder and a queue of "
                           "negatives", MoCoConfig, build)
