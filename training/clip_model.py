"""CLIP architectures from open_clip, including the small configs this project ships.

open_clip is the model library; this module only (1) registers the project's
CPU-sized configs with it, (2) rebuilds a model from a full config dict (so an
encoder file carries its own architecture and never depends on a registry), and
(3) picks the tokenizer that matches a text config.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import open_clip
import torch

CONFIG_DIR = Path(__file__).with_name("model_configs")
open_clip.add_model_config(CONFIG_DIR)  # names such as "lookalike-tiny" become open_clip models


def model_config(model_name: str) -> dict[str, Any]:
    """The full open_clip config dict of a registered model name."""
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        known = ", ".join(open_clip.list_models())
        raise ValueError(f"unknown open_clip model {model_name!r}; known models: {known}")
    return copy.deepcopy(cfg)


def build_model(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a randomly initialised CLIP from a full config dict (as in an encoder file).

    A config with an ``image_backbone`` (a ``training.backbones`` spec, e.g. ``lookalike-cnn``'s small
    CNN) gets that backbone and a linear projection as its image tower (``BackboneTower``) in place of
    the open_clip tower its ``vision_cfg`` describes; ``vision_cfg.image_size`` is still its input size.
    """
    cfg = copy.deepcopy(model_cfg)
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models are not supported as encoders")
    backbone = cfg.pop("image_backbone", None)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    model = cls(**cfg)
    if backbone:
        size = cfg["vision_cfg"]["image_size"]
        # bilinear: the resampling of the training crops (torchvision's RandomResizedCrop)
        preprocess = {"size": size, "mean": list(open_clip.OPENAI_DATASET_MEAN),
                      "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bilinear", "resize_mode": "shortest"}
        attach_backbone_tower(model, backbone, int(cfg["embed_dim"]), preprocess)
    return model


def build_tokenizer(model_name: str, model_cfg: dict[str, Any]):
    """The tokenizer that belongs to ``model_cfg``'s text tower (open_clip's own)."""
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH)
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("tokenizer_mode"):
        # Hugging Face and SigLIP tokenizers: open_clip knows how to make them.
        return open_clip.get_tokenizer(model_name, context_length=context_length)
    return open_clip.SimpleTokenizer(context_length=context_length)


def preprocess_of(model: torch.nn.Module) -> dict[str, Any]:
    """The evaluation preprocessing that open_clip attaches to a model's image tower."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", model.visual.image_size)
    if isinstance(size, (tuple, list)):
        size = size[0] if size[0] == size[-1] else list(size)
    return {
        "size": size,
        "mean": list(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": list(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "resize_mode": cfg.get("resize_mode", "shortest"),
    }


class BackboneTower(torch.nn.Module):
    """A CLIP image tower made of an image-only encoder's backbone and a linear projection to the joint
    space: (B, 3, H, W) -> (B, embed_dim). With it, a SimCLR / MoCo / RotNet encoder of this project
    becomes the image side of a CLIP model, and only the text tower (and the projection) must learn
    to meet it — LiT's recipe ("locked image, text tuning") with a self-supervised image model.

    ``locked``: the backbone's weights are frozen and its batch-norm statistics stay as they were
    (the module keeps the backbone in eval mode even while the model trains); the projection trains.
    """

    def __init__(self, backbone: torch.nn.Module, embed_dim: int, preprocess: dict[str, Any],
                 locked: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = torch.nn.Linear(backbone.out_dim, embed_dim, bias=False)
        self.preprocess_cfg = dict(preprocess)  # read by preprocess_of, like open_clip's towers
        self.image_size = preprocess["size"]
        self.locked = False
        if locked:
            self.lock()

    def lock(self) -> None:
        self.locked = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> BackboneTower:
        super().train(mode)
        if self.locked:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.locked:
            with torch.no_grad():
                features = self.backbone(x)
            return self.proj(features)
        return self.proj(self.backbone(x))


def attach_backbone_tower(model: torch.nn.Module, spec: dict[str, Any], embed_dim: int,
                          preprocess: dict[str, Any], locked: bool = False) -> BackboneTower:
    """Replace ``model.visual`` by a ``BackboneTower`` around a fresh backbone of ``spec``; returns the tower."""
    from training.backbones import build_backbone

    model.visual = BackboneTower(build_backbone(spec), int(embed_dim), preprocess, locked)
    return model.visual
