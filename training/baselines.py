"""Reference points for evaluation tables: raw pixels as an "encoder".

An encoder worth training must beat nearest neighbours on the pixels themselves.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from training.encoder import Encoder, Preprocess

PIXELS = "pixels"


def pixel_encoder(like: Preprocess, device: str | torch.device = "cpu") -> Encoder:
    """Pixels resized and cropped as ``like`` says (the same preprocessing path as every encoder), scaled to
    [0, 1] without mean/std normalisation, flattened and L2-normalised: dim = 3 * H * W."""
    preprocess = replace(like, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    size = preprocess.size if isinstance(preprocess.size, (list, tuple)) else [preprocess.size] * 2
    return Encoder(
        kind=PIXELS,
        dim=3 * int(size[0]) * int(size[1]),
        fingerprint=f"{PIXELS}:{size[0]}x{size[1]}",
        preprocess=preprocess,
        image_tower=lambda x: x.flatten(1),  # (B, 3, H, W) -> (B, 3HW)
        meta={"source": PIXELS},
        device=torch.device(device),
    )
