"""CLIP: a thin task joining an open_clip model and a contrastive loss.

Batches of two tensors, (images, tokens), train plain CLIP with open_clip's ``ClipLoss``
(or ``SigLipLoss``, ``loss="siglip"``: Zhai et al. 2023's pairwise sigmoid, which needs a
model with a learnt logit bias, ``init_logit_bias`` in its config; ``training.train_clip.make_model``
adds one).

Batches of four, (view_1, view_2, tokens, groups) from ``training.data.ImageTextDataset(views=2)``,
train the data-efficient form: both views of every item meet the texts in a multi-positive CLIP loss
(images and captions of the same group are positives, not negatives), and, with ``ssl_weight > 0``,
a supervised-contrastive term on the image tower alone pulls the views of a group together through
a projection head that the encoder file leaves out (SLIP, Mu et al. 2022, with SupCon's positives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import open_clip
from open_clip.loss import SigLipLoss
import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import unwrap
from training.losses import multi_positive_clip, supcon

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learnt temperature at 1/100


class ClipTrainingModel(nn.Module):
    """An open_clip model plus what only training needs: the image-side projection head of the SSL term.

    ``forward(images (Bi, 3, H, W), tokens (Bt, ctx))`` -> (image embeddings (Bi, d), text embeddings
    (Bt, d), both L2-normalised, logit scale (), SSL projections (Bi, p) or None). The SSL head reads the
    image tower's backbone features when the tower has a trainable backbone (``BackboneTower``), else its
    output (a locked tower's projection still trains, so the term still has something to move).
    """

    def __init__(self, clip: nn.Module, ssl_dim: int = 0, ssl_hidden: int = 512) -> None:
        super().__init__()
        self.clip = clip
        self.ssl_head = None
        if ssl_dim:
            from training.simclr import ProjectionHead

            width = clip.visual.backbone.out_dim if self._backbone_features() else int(clip.text_projection.shape[1])
            self.ssl_head = ProjectionHead(width, ssl_hidden, ssl_dim)

    def _backbone_features(self) -> bool:
        """Whether the SSL head reads the backbone's features (a trainable BackboneTower) or the tower's output."""
        visual = self.clip.visual
        return hasattr(visual, "backbone") and not getattr(visual, "locked", False)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        visual = self.clip.visual
        if self._backbone_features():
            features = visual.backbone(images)  # (Bi, width)
            image = visual.proj(features)
        else:
            image = features = visual(images)
        text = self.clip.encode_text(tokens, normalize=True)
        ssl = self.ssl_head(features) if self.ssl_head is not None else None
        return F.normalize(image, dim=-1), text, self.clip.logit_scale.exp(), ssl


@dataclass
class ClipMethod:
    model: torch.nn.Module  # an open_clip model (2-tensor batches) or a ClipTrainingModel (4-tensor batches)
    loss: open_clip.ClipLoss | SigLipLoss | None
    rank: int = 0
    world_size: int = 1
    ssl_weight: float = 0.0
    ssl_temperature: float = 0.1
    channels_last: bool = False  # feed the image tower NHWC batches (its weights converted by the caller)

    @classmethod
    def create(cls, model: torch.nn.Module, rank: int = 0, world_size: int = 1, loss: str = "clip",
               **options) -> "ClipMethod":
        """``loss``: clip, siglip, or multi-positive (for ``ClipTrainingModel`` and 4-tensor batches)."""
        if loss == "multi-positive":
            return cls(model=model, loss=None, rank=rank, world_size=world_size, **options)
        if loss == "siglip":
            if getattr(unwrap(model), "logit_bias", None) is None:
                raise ValueError("the SigLIP loss needs a model with a logit bias (init_logit_bias in its config)")
            # SigLIP exchanges text features with the neighbouring ranks; no all-gather of the whole batch.
            return cls(model=model, loss=SigLipLoss(rank=rank, world_size=world_size), **options)
        if loss != "clip":
            raise ValueError(f"unknown loss {loss!r}: clip, siglip or multi-positive")
        # local_loss + gather_with_grad: each rank scores its own rows against every
        # rank's columns, and gradients flow through the gathered features.
        return cls(model=model, loss=open_clip.ClipLoss(
            local_loss=world_size > 1, gather_with_grad=world_size > 1, rank=rank, world_size=world_size), **options)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(batch) == 4:
            return self._grouped_step(*batch)
        images, tokens = batch  # (B, 3, H, W), (B, ctx)
        # (B, d), (B, d), () and, for models with a logit bias, ()
        image_features, text_features, logit_scale, *bias = self.model(self._images(images), tokens)
        if isinstance(self.loss, SigLipLoss):
            loss = self.loss(image_features, text_features, logit_scale, bias[0])
        else:
            loss = self.loss(image_features, text_features, logit_scale)
        return {"loss": loss, "temperature": 1.0 / logit_scale.detach()}

    def _grouped_step(self, view1: torch.Tensor, view2: torch.Tensor, tokens: torch.Tensor,
                      groups: torch.Tensor) -> dict[str, torch.Tensor]:
        # (B, 3, H, W) x 2, (B, ctx), (B,): one forward over both views (batch norm sees all 2B)
        image, text, logit_scale, ssl = self.model(self._images(torch.cat([view1, view2])), tokens)
        view_groups = torch.cat([groups, groups])  # (2B,)
        clip = multi_positive_clip(image, text, logit_scale, view_groups, groups, self.rank, self.world_size)
        out = {"clip": clip.detach(), "temperature": 1.0 / logit_scale.detach()}
        loss = clip
        if ssl is not None and self.ssl_weight > 0:
            image_loss = supcon(ssl, view_groups, self.ssl_temperature, self.rank, self.world_size)
            loss = loss + self.ssl_weight * image_loss
            out["ssl"] = image_loss.detach()
        out["loss"] = loss
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        model = unwrap(self.model)
        model = getattr(model, "clip", model)
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
