"""Image backbones chosen by a JSON-able spec: images (B, 3, H, W) -> features (B, out_dim).

A spec is a dict with a ``name`` and that backbone's options; it is stored verbatim in
encoder files (``arch["backbone"]``), so ``build_backbone(spec)`` rebuilds the same
network for loading. Backbones are always built with random weights: pretrained weights
would need a download, and an encoder's weights come from its file.

    {"name": "small-cnn", "width": 32, "depth": 3, "norm": "bn"}   # trains in minutes on a CPU
    {"name": "small-cnn", "grid": 2}                                # 2x2 average pooling: keeps the layout
    {"name": "resnet18", "small_stem": true}                        # torchvision; 3x3 stem for 28-64 px
    {"name": "resnet50"}
    {"name": "timm:convnext_atto"}                                  # any timm model, if timm is installed
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class SmallCNN(nn.Module):
    """``depth`` blocks of (3x3 conv, norm, ReLU) x 2 with stride-2 downsampling between blocks,
    channels ``width * 2**i``, then average pooling to a ``grid`` x ``grid`` map, flattened (1: global
    average pooling; 2 keeps the coarse layout, where things are in the picture, that small centred
    images such as icons share across styles). ~0.3M parameters at width 32, depth 3."""

    def __init__(self, width: int = 32, depth: int = 3, norm: str = "bn", in_channels: int = 3,
                 grid: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(depth):
            c_out = width * 2**i
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none"),
                           _norm(norm, c_out), nn.ReLU(inplace=True)]
                c_in = c_out
        self.net = nn.Sequential(*layers)
        if grid < 1:
            raise ValueError(f"grid must be >= 1, not {grid}")
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.out_dim = c_in * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, out_dim)
        return self.pool(self.net(x)).flatten(1)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (bn, gn or none)")


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet without its classifier; ``small_stem`` swaps the 7x7/2 conv + max-pool for a
    3x3/1 conv (as SimCLR does for CIFAR), so 28-64 px inputs keep their resolution."""

    def __init__(self, name: str, small_stem: bool = False) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if small_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, out_dim)
        return self.net(x)


class TimmBackbone(nn.Module):
    """Any timm model with its classifier removed (``num_classes=0``: pooled features)."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ValueError(f"backbone timm:{name} needs timm (pip install timm)") from None
        self.net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        self.out_dim = int(self.net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, out_dim)
        return self.net(x)


def parse_backbone(text: str) -> dict[str, Any]:
    """A backbone spec from the command line: a JSON object, or ``NAME[,key=value...]``.

    ``resnet18,small_stem=true`` -> {"name": "resnet18", "small_stem": True}
    """
    import json

    text = text.strip()
    if text.startswith("{"):
        spec = json.loads(text)
    else:
        name, *options = [part.strip() for part in text.split(",") if part.strip()]
        spec = {"name": name}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep:
                raise ValueError(f"backbone option {option!r} is not key=value")
            try:
                spec[key] = json.loads(value)
            except json.JSONDecodeError:
                spec[key] = value
    return spec


def build_backbone(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised backbone with an ``out_dim`` attribute."""
    options = {k: v for k, v in spec.items() if k != "name"}
    name = spec.get("name")
    try:
        if name == "small-cnn":
            return SmallCNN(**options)
        if name in TORCHVISION_RESNETS:
            return TorchvisionResNet(name, **options)
        if isinstance(name, str) and name.startswith("timm:"):
            return TimmBackbone(name[len("timm:"):], **options)
    except TypeError as exc:  # unexpected option
        raise ValueError(f"bad options for backbone {name!r}: {exc}") from None
    except RuntimeError as exc:  # timm: unknown model
        raise ValueError(f"cannot build backbone {name!r}: {exc}") from None
    raise ValueError(f"unknown backbone {name!r}: small-cnn, {', '.join(TORCHVISION_RESNETS)} or timm:MODEL")
