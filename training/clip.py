"""CLIP: a thin task joining an open_clip model and open_clip's ClipLoss (or its SigLipLoss).

``loss="siglip"`` swaps the softmax over the batch for SigLIP's pairwise sigmoid loss
(Zhai et al. 2023), which needs a model with a learnt logit bias (``init_logit_bias``
in its config; ``training.train_clip.make_model`` adds one)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import open_clip
from open_clip.loss import SigLipLoss
import torch

from training.distributed import unwrap

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learnt temperature at 1/100


@dataclass
class ClipMethod:
    model: torch.nn.Module
    loss: open_clip.ClipLoss | SigLipLoss

    @classmethod
    def create(cls, model: torch.nn.Module, rank: int = 0, world_size: int = 1, loss: str = "clip") -> "ClipMethod":
        if loss == "siglip":
            if getattr(unwrap(model), "logit_bias", None) is None:
                raise ValueError("the SigLIP loss needs a model with a logit bias (init_logit_bias in its config)")
            # SigLIP exchanges text features with the neighbouring ranks; no all-gather of the whole batch.
            return cls(model=model, loss=SigLipLoss(rank=rank, world_size=world_size))
        if loss != "clip":
            raise ValueError(f"unknown loss {loss!r}: clip or siglip")
        # local_loss + gather_with_grad: each rank scores its own rows against every
        # rank's columns, and gradients flow through the gathered features.
        return cls(model=model, loss=open_clip.ClipLoss(
            local_loss=world_size > 1, gather_with_grad=world_size > 1, rank=rank, world_size=world_size))

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        images, tokens = batch  # (B, 3, H, W), (B, ctx)
        # (B, d), (B, d), () and, for models with a logit bias, ()
        image_features, text_features, logit_scale, *bias = self.model(images, tokens)
        if isinstance(self.loss, SigLipLoss):
            loss = self.loss(image_features, text_features, logit_scale, bias[0])
        else:
            loss = self.loss(image_features, text_features, logit_scale)
        return {"loss": loss, "temperature": 1.0 / logit_scale.detach()}

    @torch.no_grad()
    def after_step(self) -> None:
        unwrap(self.model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
