"""SimCLR-style augmentation of a whole batch at once, each image with its own random parameters.

torchvision's v2 transforms draw one set of parameters per call, so a batch of B views costs B
pipeline calls: ~2 ms each for a 32 px emoji view here (hue alone ~7 ms, through HSV), which on
a 2-core machine took as much CPU as the model's step. The same operations written as batched
tensor arithmetic take a few milliseconds for a whole batch:

- random resized crop, horizontal flip and rotation as one affine warp per image
  (``affine_grid`` + ``grid_sample``), sampled at twice the output size and average-pooled
  (antialiasing); uncovered corners are filled with ``fill`` (white: the background of flattened artwork);
- colour jitter: brightness, contrast, saturation as in torchvision (blends with black, the mean
  grey level and the grey image) and hue as a rotation of the chroma plane of YIQ (a linear map,
  unlike torchvision's HSV round trip);
- random grayscale, then normalisation.

Inputs are uint8 (B, 3, S, S) pixels (``training.data`` keeps them in memory), parameters come
from a ``torch.Generator`` the caller seeds (per batch, from its sampler keys), so a run and its
resumption see the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.augment import AugmentConfig

# RGB <-> YIQ (NTSC): Y is luma, (I, Q) the chroma plane a hue shift rotates
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass
class BatchAugment:
    cfg: AugmentConfig
    size: int  # output side (px)
    mean: list[float]
    std: list[float]
    fill: float = 1.0  # value of what a rotation uncovers, in [0, 1]: white for artwork, 0 as torchvision

    def __post_init__(self) -> None:
        if self.cfg.blur_prob > 0:
            raise ValueError("batched augmentation has no blur; set blur_prob=0 (small images get none anyway)")

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> float32 (B, 3, size, size), augmented and normalised."""
        x = pixels.float().div_(255)
        x = self._warp(x, generator)
        x = self._colour(x, generator)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def _uniform(self, n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=g)

    def _chance(self, n: int, p: float, g: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=g) < p

    def _warp(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Crop of area fraction in [min_scale, max_scale] and aspect ratio in [3/4, 4/3], flip, rotation."""
        b, cfg = x.shape[0], self.cfg
        area = self._uniform(b, cfg.min_scale, cfg.max_scale, g)
        ratio = torch.exp(self._uniform(b, math.log(3 / 4), math.log(4 / 3), g))
        if cfg.min_scale >= 1:  # no crop: the whole image, undistorted
            ratio = torch.ones(b)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (1 - w) * (2 * torch.rand(b, generator=g) - 1)  # crop centre in [-1, 1] coordinates
        cy = (1 - h) * (2 * torch.rand(b, generator=g) - 1)
        flip = torch.where(self._chance(b, cfg.flip_prob, g), -1.0, 1.0)
        angle = torch.zeros(b)
        if cfg.rotate_prob > 0 and cfg.rotate_degrees > 0:
            rotate = self._chance(b, cfg.rotate_prob, g)
            angle = torch.where(rotate, self._uniform(b, -cfg.rotate_degrees, cfg.rotate_degrees, g), 0.0)
        cos, sin = torch.cos(torch.deg2rad(angle)), torch.sin(torch.deg2rad(angle))
        # output (u, v) in [-1, 1]^2 -> input coordinates: rotate, then scale to the crop, then shift
        theta = torch.stack([torch.stack([w * flip * cos, -h * sin, cx], 1),
                             torch.stack([w * flip * sin, h * cos, cy], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, [b, 3, 2 * self.size, 2 * self.size], align_corners=False)
        # sample (x - fill) with zero padding, then add fill back: what falls outside the image is ``fill``
        out = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + self.fill
        return F.avg_pool2d(out, 2)

    def _colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, cfg, s = x.shape[0], self.cfg, self.cfg.jitter_strength
        if cfg.jitter_prob > 0 and s > 0:
            on = self._chance(b, cfg.jitter_prob, g).view(b, 1, 1, 1)
            one = lambda spread: self._uniform(b, max(0.0, 1 - spread), 1 + spread, g).view(b, 1, 1, 1)  # noqa: E731
            y = x * one(0.8 * s)
            grey = (y * _GREY.view(1, 3, 1, 1)).sum(1, keepdim=True)
            c = one(0.8 * s)
            y = c * y + (1 - c) * grey.mean(dim=(2, 3), keepdim=True)
            if cfg.jitter_saturation:
                grey = (y * _GREY.view(1, 3, 1, 1)).sum(1, keepdim=True)
                sat = one(0.8 * s)
                y = sat * y + (1 - sat) * grey
            if cfg.jitter_hue:
                y = self._hue(y.clamp(0, 1), self._uniform(b, -0.2 * s, 0.2 * s, g))
            x = torch.where(on, y.clamp(0, 1), x)
        if cfg.grayscale_prob > 0:
            grey = (x * _GREY.view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
            x = torch.where(self._chance(b, cfg.grayscale_prob, g).view(b, 1, 1, 1), grey, x)
        return x

    @staticmethod
    def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Rotate each image's chroma by ``shift`` turns (B,) in YIQ space: (B, 3, H, W) -> same."""
        a = 2 * math.pi * shift
        cos, sin, zero, one = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
        rotation = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                                torch.stack([zero, sin, cos], 1)], 1)  # (B, 3, 3) acting on (Y, I, Q)
        to_yiq = _RGB_TO_YIQ
        matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3) in RGB
        return torch.einsum("bij,bjhw->bihw", matrix, x).clamp(0, 1)
