"""Augmentations for self-supervised training, on torchvision transforms v2.

SimCLR's recipe (random resized crop, flip, colour jitter, grayscale, blur), with
defaults scaled to the image size: small pictures (28-64 px: digits, emoji, icons)
get milder crops and no blur, as in SimCLR's CIFAR setting, since a 5 % crop of a
28 px digit is a handful of pixels and a blur kernel of 10 % of it is one pixel, and no
flips: digits, icons and letters have a handedness (a mirrored 2 is no 2), and dropping
flips raised SimCLR on both emoji and MNIST (bench/README.md).

Every transform draws from torch's global RNG, so the datasets in ``training.data``
make each sample's views reproducible by seeding that RNG per sample key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from training.encoder import Preprocess
from training.images import to_rgb


@dataclass
class AugmentConfig:
    min_scale: float = 0.08  # random resized crop: smallest area fraction
    max_scale: float = 1.0
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    jitter_strength: float = 1.0  # s in SimCLR: brightness/contrast/saturation 0.8 s, hue 0.2 s
    jitter_saturation: bool = True  # False for grayscale data (digits): saturation and hue change nothing there
    jitter_hue: bool = True
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    rotate_prob: float = 0.0  # random rotation (lightly's rr_prob), e.g. for digits
    rotate_degrees: float = 0.0  # uniformly in [-d, d]; uncovered corners are filled with black

    @classmethod
    def for_size(cls, size: int, **overrides) -> AugmentConfig:
        """Defaults for ``size`` px inputs: SimCLR's ImageNet recipe above 64 px, its CIFAR recipe below."""
        if size <= 64:
            base = dict(min_scale=0.2, jitter_strength=0.5, blur_prob=0.0, flip_prob=0.0)
        else:
            base = {}
        return cls(**{**base, **overrides})


def blur_kernel(size: int) -> int:
    """An odd kernel of about 10 % of the image side (SimCLR), at least 3."""
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 else k + 1


def simclr_transform(preprocess: Preprocess, cfg: AugmentConfig) -> Callable[[Image.Image], torch.Tensor]:
    """One random view: PIL image of any mode (or RGB uint8 pixels (3, h, w)) -> float tensor (3, size, size),
    normalised like ``preprocess``."""
    size = _side(preprocess.size)
    s = cfg.jitter_strength
    steps: list = [
        v2.RandomResizedCrop(size, scale=(cfg.min_scale, cfg.max_scale), interpolation=_interp(preprocess),
                             antialias=True),
    ]
    if cfg.flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.flip_prob))
    if cfg.rotate_prob > 0 and cfg.rotate_degrees > 0:
        rotation = v2.RandomRotation(cfg.rotate_degrees, interpolation=_interp(preprocess))
        steps.append(v2.RandomApply([rotation], p=cfg.rotate_prob))
    if cfg.jitter_prob > 0 and s > 0:
        jitter = v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s if cfg.jitter_saturation else 0.0,
                                0.2 * s if cfg.jitter_hue else 0.0)
        steps.append(v2.RandomApply([jitter], p=cfg.jitter_prob))
    if cfg.grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_prob))
    if cfg.blur_prob > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel(size), sigma=cfg.blur_sigma)], p=cfg.blur_prob))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocess.mean, preprocess.std)]
    pipeline = v2.Compose(steps)
    return lambda image: pipeline(to_rgb(image) if isinstance(image, Image.Image) else image)


def light_transform(preprocess: Preprocess, min_scale: float = 0.5, flip_prob: float = 0.5) -> Callable:
    """A mild view (crop, horizontal flip) for methods whose pretext task is not invariance, e.g. RotNet.

    A horizontal flip keeps an upright picture upright, so it never changes a rotation label."""
    size = _side(preprocess.size)
    steps: list = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=_interp(preprocess),
                                        antialias=True)]
    if flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(flip_prob))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocess.mean, preprocess.std)]
    pipeline = v2.Compose(steps)
    return lambda image: pipeline(to_rgb(image))


class Views:
    """``n`` independent draws of ``transform`` on one image: (view_1, ..., view_n)."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], n: int = 2) -> None:
        self.transform, self.n = transform, n

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, ...]:
        return tuple(self.transform(image) for _ in range(self.n))


def _side(size: int | list[int]) -> int:
    if isinstance(size, int):
        return size
    if len(set(size)) != 1:
        raise ValueError(f"self-supervised training uses square inputs; got size {size}")
    return int(size[0])


def _interp(preprocess: Preprocess) -> InterpolationMode:
    return InterpolationMode(preprocess.interpolation)
