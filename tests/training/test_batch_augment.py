"""Batched augmentation: per-image parameters, reproducible from a seed, the operations they name."""

import pytest
import torch

from training.augment import AugmentConfig
from training.batch_augment import BatchAugment

NONE = dict(min_scale=1.0, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def _pixels(n=6, side=16, seed=0):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _run(cfg, pixels, seed=0, size=8):
    return BatchAugment(cfg, size, [0.0] * 3, [1.0] * 3)(pixels, torch.Generator().manual_seed(seed))


def test_without_augmentation_it_is_a_plain_antialiased_resize():
    pixels = _pixels()
    out = _run(AugmentConfig(**NONE), pixels)
    expected = torch.nn.functional.avg_pool2d(pixels.float() / 255, 2)  # 16 px -> 8 px, box filter
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_the_same_seed_gives_the_same_views_and_images_differ_from_each_other():
    cfg = AugmentConfig(min_scale=0.3, flip_prob=0.5, jitter_prob=0.8, jitter_strength=0.5, grayscale_prob=0.2,
                        blur_prob=0.0, rotate_prob=0.5, rotate_degrees=20)
    pixels = _pixels(1).expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    a, b = _run(cfg, pixels, seed=5), _run(cfg, pixels, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, _run(cfg, pixels, seed=6))
    distinct = {tuple(v.flatten().tolist()) for v in a}
    assert len(distinct) > 25  # each copy got its own crop / colour
    assert a.shape == (32, 3, 8, 8) and a.min() >= 0 and a.max() <= 1


def test_flip_mirrors_the_image():
    pixels = _pixels(4)
    flipped = _run(AugmentConfig(**{**NONE, "flip_prob": 1.0}), pixels)
    torch.testing.assert_close(flipped, _run(AugmentConfig(**NONE), pixels).flip(-1), atol=1e-5, rtol=0)


def test_grayscale_makes_the_channels_equal():
    out = _run(AugmentConfig(**{**NONE, "grayscale_prob": 1.0}), _pixels())
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_rotation_fills_the_corners_with_white():
    black = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    out = _run(AugmentConfig(**{**NONE, "rotate_prob": 1.0, "rotate_degrees": 45}), black, size=16)
    assert out[:, :, 0, 0].min() > 0.3  # a corner of a rotated black square shows the white fill
    assert out[:, :, 8, 8].max() < 1e-6  # the centre stays black


def test_hue_rotation_keeps_grey_and_a_full_turn_is_the_identity():
    x = torch.rand(3, 3, 4, 4)
    same = BatchAugment._hue(x, torch.tensor([0.0, 1.0, -1.0]))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    grey = torch.full((1, 3, 2, 2), 0.4)
    torch.testing.assert_close(BatchAugment._hue(grey, torch.tensor([0.3])), grey, atol=1e-5, rtol=0)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 0.8
    shifted = BatchAugment._hue(red, torch.tensor([1 / 3]))  # a third of a turn: red moves towards green
    assert shifted[0, 1] > shifted[0, 0]


def test_blur_is_refused():
    with pytest.raises(ValueError, match="blur"):
        BatchAugment(AugmentConfig(blur_prob=0.5), 8, [0.0] * 3, [1.0] * 3)


def test_brightness_and_contrast_only_keep_each_colour_apart():
    # the CLIP default's jitter (hue and saturation off): a red, a green and a blue square keep their dominant channel
    cfg = AugmentConfig(min_scale=0.6, flip_prob=0.0, jitter_prob=1.0, jitter_strength=0.5, jitter_saturation=False,
                        jitter_hue=False, grayscale_prob=0.0, blur_prob=0.0)
    pixels = torch.zeros(3, 3, 16, 16, dtype=torch.uint8)
    for c in range(3):
        pixels[c, c] = 200
    pixels = pixels.repeat(8, 1, 1, 1)  # 24 images, 8 of each colour
    out = _run(cfg, pixels, seed=3).mean(dim=(2, 3))  # (24, 3) mean colour of each view
    assert torch.equal(out.argmax(1), torch.arange(3).repeat(8))
    hued = _run(AugmentConfig(**{**vars(cfg), "jitter_hue": True, "jitter_strength": 2.5}), pixels, seed=3)
    assert not torch.equal(hued.mean(dim=(2, 3)).argmax(1), torch.arange(3).repeat(8))  # a hue shift can swap them
