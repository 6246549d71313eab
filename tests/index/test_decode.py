import pytest

from index.decode import BadImage, DecodeLimits, open_image

LIMITS = DecodeLimits(max_pixels=10_000_000)


@pytest.mark.parametrize("name", ["good.png", "cmyk.jpg", "sixteen.png", "animated.gif"])
def test_odd_but_valid_files_decode(odd_files, name):
    image = open_image(odd_files[name], LIMITS)
    assert image.width > 0 and image.height > 0
    image.getpixel((0, 0))


@pytest.mark.parametrize("name, reason", [
    ("truncated.png", "corrupt"),
    ("truncated.jpg", "corrupt"),
    ("zero.jpg", "empty"),
    ("text.jpg", "not_an_image"),
    ("bomb.png", "too_many_pixels"),
])
def test_bad_files_are_refused_with_a_reason(odd_files, name, reason):
    with pytest.raises(BadImage) as info:
        open_image(odd_files[name], LIMITS)
    assert info.value.reason == reason


def test_bytes_work_like_files(odd_files):
    assert open_image(odd_files["good.png"].read_bytes(), LIMITS).size == (64, 48)
    with pytest.raises(BadImage) as info:
        open_image(b"", LIMITS)
    assert info.value.reason == "empty"


def test_pixel_limit_is_checked_before_decoding(odd_files):
    with pytest.raises(BadImage, match="above the limit of 100"):
        open_image(odd_files["good.png"], DecodeLimits(max_pixels=100))


def test_exif_orientation_is_applied(odd_files):
    assert open_image(odd_files["rotated.jpg"], LIMITS).size == (48, 64)


def test_first_frame_of_an_animation(odd_files):
    image = open_image(odd_files["animated.gif"], LIMITS)
    assert image.getpixel((0, 0)) == 0
