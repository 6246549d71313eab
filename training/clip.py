"""CLIP: a thin task joining an open_clip model and open_clip's ClipLoss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import open_clip
import torch

from training.distributed import unwrap

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learnt temperature at 1/100


@dataclass
class ClipMethod:
    model: torch.nn.Module
    loss: open_clip.ClipLoss

    @classmethod
    def create(cls, model: torch.nn.Module, rank: int = 0, world_size: int = 1) -> "ClipMethod":
        # local_loss + gather_with_grad: each rank scores its own rows against every
        # rank's columns, and gradients flow through the gathered features.
        loss = open_clip.ClipLoss(
            local_loss=world_size > 1, gather_with_grad=world_size > 1, rank=rank, world_size=world_size
        )
        return cls(model=model, loss=loss)

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        images, tokens = batch  # (B, 3, H, W), (B, ctx)
        image_features, text_features, logit_scale = self.model(images, tokens)[:3]  # (B, d), (B, d), ()
        loss = self.loss(image_features, text_features, logit_scale)
        return {"loss": loss, "temperature": 1.0 / logit_scale.detach()}

    @torch.no_grad()
    def after_step(self) -> None:
        unwrap(self.model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
