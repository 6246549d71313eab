"""DDP around a model for training, and the plain module back out of DDP and ``torch.compile``.

The process group itself is set up by ``core.distributed``."""

from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel

from core.distributed import DistInfo


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` when there are several processes; the model itself otherwise."""
    if not info.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
