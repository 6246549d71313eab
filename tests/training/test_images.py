import numpy as np
from PIL import Image

from training.images import to_rgb


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    im.putpixel((0, 0), (255, 0, 0, 255))
    rgb = np.asarray(to_rgb(im))
    assert rgb.shape == (4, 4, 3)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[3, 3]) == (255, 255, 255)


def test_half_transparent_is_blended():
    im = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    (value,) = set(np.asarray(to_rgb(im))[0, 0].tolist())
    assert 120 <= value <= 135


def test_palette_with_transparency():
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0
    rgb = np.asarray(to_rgb(im))
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 1]) == (0, 255, 0)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    arr = np.array([[0, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(arr)))
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert tuple(rgb[0, 1]) == (255, 255, 255)


def test_rgb_passes_through_and_cmyk_converts():
    im = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(im) is im
    assert to_rgb(Image.new("CMYK", (2, 2))).mode == "RGB"
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
