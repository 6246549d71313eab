"""``python -m training simclr``: a backbone, a projection head, and NT-Xent between two augmented views of each image.

Only the backbone goes into the encoder file; the projection head is a training device
(SimCLR's finding: features before the head transfer better).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.distributed import DistInfo
from training import image_only
from training.augment import Views, simclr_transform
from training.backbones import build_backbone
from training.image_only import ImageOnlyConfig, Task, preprocess_for
from training.loop import ONE_PROCESS
from training.losses import nt_xent
from training.options import option


class ProjectionHead(nn.Sequential):
    """(B, in_dim) -> (B, out_dim): Linear, [BatchNorm], ReLU, Linear (SimCLR v1's 2-layer MLP)."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, batch_norm: bool = True) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=not batch_norm),
            nn.BatchNorm1d(hidden_dim) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class SimCLRModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_dim: int = 512, out_dim: int = 128, head_bn: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.out_dim, hidden_dim, out_dim, head_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, out_dim) projections
        return self.head(self.backbone(x))


@dataclass
class SimCLRMethod:
    model: nn.Module  # a SimCLRModel (the Trainer may wrap it in DDP)
    temperature: float = 0.5
    rank: int = 0
    world_size: int = 1
    # One forward over both views: batch norm statistics then cover all 2B views, as in
    # SimCLR's code. False: one forward per view (statistics per view, lightly's examples);
    # two passes of B can be faster on CPUs, whose caches hold half the activations better.
    joint_views: bool = True

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        view1, view2 = batch  # (B, 3, H, W) each: two augmentations of the same B images
        if self.joint_views:
            b = view1.shape[0]
            z = self.model(torch.cat([view1, view2]))  # (2B, out_dim)
            z1, z2 = z[:b], z[b:]
        else:
            z1, z2 = self.model(view1), self.model(view2)  # (B, out_dim) each
        loss = nt_xent(z1, z2, self.temperature, self.rank, self.world_size)
        return {"loss": loss}


@dataclass
class SimCLRConfig(ImageOnlyConfig):
    temperature: float = option(0.1, "contrastive temperature")  # 0.1 beat 0.5 on emoji (bench/README.md)
    proj_hidden: int = option(512, "projection head hidden width")
    proj_dim: int = option(128, "projection head output width")
    separate_views: bool = option(False, "one forward pass per view (batch norm statistics per view, as lightly's "
                                  "examples do) instead of one over both views (SimCLR's joint statistics); on CPUs "
                                  "a smaller batch per pass can be faster")
    # decode the images once into memory (when they fit in cache_mb) and augment whole batches
    # (training.batch_augment) instead of one view at a time with torchvision; needs blur_prob 0
    batch_augment: bool = option(True, "decode the images once into memory and augment whole batches at once "
                                 "(without blur); --no-batch-augment: torchvision's transforms one view at a time")
    cache_mb: float = option(1024.0, "the in-memory images' limit (MiB)", cli_default=1024)


def build(cfg: SimCLRConfig, dist: DistInfo = ONE_PROCESS) -> Task:
    model = SimCLRModel(build_backbone(cfg.backbone), cfg.proj_hidden, cfg.proj_dim)
    step = SimCLRMethod(model, cfg.temperature, dist.rank, dist.world_size, joint_views=not cfg.separate_views)
    transform = Views(simclr_transform(preprocess_for(cfg), cfg.augmentation))
    return Task(model, step, transform, batched=cfg.batch_augment, cache_mb=cfg.cache_mb,
                summary={"temperature": cfg.temperature})


METHOD = image_only.method("simclr", "train a SimCLR image encoder (no labels): two augmented views, NT-Xent",
                           SimCLRConfig, build, steps=1000)  # 1,000 steps: bench/README.md, ssl_quality
