"""``python -m training rotnet``, RotNet (Gidaris et al. 2018): learn features by predicting which of 0/90/180/270
degrees an image was turned.

The rotation head is dropped from the encoder file; the backbone's pooled features are the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import DistInfo
from training import image_only
from training.augment import AugmentConfig, Views, light_transform
from training.backbones import build_backbone
from training.image_only import ImageOnlyConfig, Task, preprocess_for
from training.loop import ONE_PROCESS

ROTATIONS = 4  # label r <-> r * 90 degrees counter-clockwise


def rotate_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) square images -> (4B, C, H, W) and labels (4B,).

    Block r (rows r*B .. r*B+B-1) holds every image turned r * 90 degrees counter-clockwise (``torch.rot90``)
    and has label r."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"RotNet needs square images, got {tuple(images.shape[-2:])}")
    b = images.shape[0]
    rotated = torch.cat([torch.rot90(images, r, dims=(2, 3)) for r in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(b)
    return rotated, labels


class RotNetModel(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, ROTATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 4) rotation logits
        return self.head(self.backbone(x))


@dataclass
class RotNetMethod:
    model: nn.Module  # a RotNetModel (the Trainer may wrap it in DDP)

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        (images,) = batch  # (B, 3, H, W)
        x, y = rotate_batch(images)  # (4B, 3, H, W), (4B,)
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits.float(), y),
                "rotation_acc": (logits.detach().argmax(dim=1) == y).float().mean()}


@dataclass
class RotNetConfig(ImageOnlyConfig):
    """RotNet has no options beyond the image-only methods' own."""


def build(cfg: RotNetConfig, dist: DistInfo = ONE_PROCESS) -> Task:
    model = RotNetModel(build_backbone(cfg.backbone))
    # the crop and flip of the augmentation settings; colour and rotation ops are not RotNet's pretext
    aug = cfg.augment or AugmentConfig(min_scale=0.5)
    transform = Views(light_transform(preprocess_for(cfg), aug.min_scale, aug.flip_prob), n=1)
    return Task(model, RotNetMethod(model), transform)


METHOD = image_only.method("rotnet", "train a RotNet image encoder (no labels): predict 0/90/180/270 degree "
                           "rotations", RotNetConfig, build)
