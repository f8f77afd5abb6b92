"""Image decoding (``facegrid.data.images``): formats, EXIF orientation, DCT scaling, errors.

All images are made with Pillow in ``tmp_path``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from facegrid.core.errors import FacegridError
from facegrid.data.geometry import FULL_IMAGE, load_input, pixel_region, resize_region
from facegrid.data.images import (
    DCT_RATIOS,
    ImageError,
    dct_ratio,
    image_size,
    read_image,
    verify_image,
)

RED, GREEN, BLUE, WHITE = (220, 20, 30), (30, 200, 40), (20, 40, 210), (240, 240, 240)


def quadrants(width=64, height=48) -> np.ndarray:
    """An RGB image with four flat quadrants: red, green / blue, white."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    h, w = height // 2, width // 2
    pixels[:h, :w], pixels[:h, w:], pixels[h:, :w], pixels[h:, w:] = RED, GREEN, BLUE, WHITE
    return pixels


def quadrant_means(pixels: np.ndarray) -> np.ndarray:
    """Mean colour of the inner half of each quadrant, [4, 3]."""
    height, width = pixels.shape[:2]
    h, w = height // 2, width // 2
    out = []
    for top, left in ((0, 0), (0, w), (h, 0), (h, w)):
        inner = pixels[top + h // 4 : top + 3 * h // 4, left + w // 4 : left + 3 * w // 4]
        out.append(inner.reshape(-1, 3).astype(np.float64).mean(axis=0))
    return np.array(out)


def assert_upright_rgb(pixels: np.ndarray, height: int, width: int):
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (height, width, 3)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --------------------------------------------------------------------------- formats


def save_rgb_jpeg(path, pixels, **kw):
    Image.fromarray(pixels).save(path, quality=95, **kw)
    return path


def test_rgb_jpeg(tmp_path):
    path = save_rgb_jpeg(tmp_path / "rgb.jpg", quadrants())
    pixels = read_image(path)
    assert_upright_rgb(pixels, 48, 64)
    np.testing.assert_allclose(quadrant_means(pixels), [RED, GREEN, BLUE, WHITE], atol=8)
    assert image_size(path) == (64, 48)


def test_grayscale_jpeg(tmp_path):
    gray = np.zeros((48, 64), dtype=np.uint8)
    gray[:, 32:] = 200
    gray[:, :32] = 50
    path = tmp_path / "gray.jpg"
    Image.fromarray(gray, mode="L").save(path, quality=95)
    pixels = read_image(path)
    assert_upright_rgb(pixels, 48, 64)
    np.testing.assert_allclose(pixels[10:38, 8:24].mean(axis=(0, 1)), [50, 50, 50], atol=3)
    np.testing.assert_allclose(pixels[10:38, 40:56].mean(axis=(0, 1)), [200, 200, 200], atol=3)
    assert image_size(path) == (64, 48)


@pytest.fixture
def cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(quadrants()).convert("CMYK").save(path, quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    return path


def test_cmyk_jpeg_through_load_input(cmyk_jpeg):
    pixels, size = load_input(cmyk_jpeg, 32)
    assert size == (64, 48)
    assert_upright_rgb(pixels, 32, 32)
    np.testing.assert_allclose(quadrant_means(pixels), [RED, GREEN, BLUE, WHITE], atol=12)
    assert image_size(cmyk_jpeg) == (64, 48)


def test_cmyk_jpeg_with_a_min_size(cmyk_jpeg):
    pixels = read_image(cmyk_jpeg, min_size=(64, 48))
    assert_upright_rgb(pixels, 48, 64)
    np.testing.assert_allclose(quadrant_means(pixels), [RED, GREEN, BLUE, WHITE], atol=12)


def test_cmyk_jpeg_at_full_resolution(cmyk_jpeg):
    pixels = read_image(cmyk_jpeg)
    assert_upright_rgb(pixels, 48, 64)
    np.testing.assert_allclose(quadrant_means(pixels), [RED, GREEN, BLUE, WHITE], atol=12)


def test_png_rgba(tmp_path):
    rgba = np.dstack([quadrants(), np.full((48, 64), 255, dtype=np.uint8)])
    rgba[0, 0, 3] = 0  # one transparent pixel must not change the shape
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    pixels = read_image(path)
    assert_upright_rgb(pixels, 48, 64)
    np.testing.assert_array_equal(quadrant_means(pixels), [RED, GREEN, BLUE, WHITE])


def test_palette_png(tmp_path):
    path = tmp_path / "palette.png"
    Image.fromarray(quadrants()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)
    with Image.open(path) as check:
        assert check.mode == "P"
    pixels = read_image(path)
    assert_upright_rgb(pixels, 48, 64)
    np.testing.assert_allclose(quadrant_means(pixels), [RED, GREEN, BLUE, WHITE], atol=2)


def test_sixteen_bit_grayscale_png(tmp_path):
    wide = np.zeros((48, 64), dtype=np.uint16)
    wide[:, 16:32] = 32896  # 128 * 257
    wide[:, 32:48] = 65535
    wide[:, 48:] = 257 * 40
    path = tmp_path / "gray16.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    pixels = read_image(path)
    assert_upright_rgb(pixels, 48, 64)
    for left, value in ((0, 0), (16, 128), (32, 255), (48, 40)):
        np.testing.assert_array_equal(pixels[:, left : left + 16], value)


def test_grayscale_png_and_bundled_samples(samples):
    camera = read_image(samples / "images" / "portraits" / "camera.png")  # mode L
    assert_upright_rgb(camera, 512, 512)
    np.testing.assert_array_equal(camera[..., 0], camera[..., 1])
    np.testing.assert_array_equal(camera[..., 0], camera[..., 2])
    hopper = samples / "images" / "portraits" / "grace_hopper.jpg"
    assert image_size(hopper) == (512, 600)
    assert_upright_rgb(read_image(hopper), 600, 512)
    assert image_size(samples / "images" / "background" / "rocket.jpg") == (640, 427)


# --------------------------------------------------------------------------- EXIF orientation


def upright_pattern(width=96, height=64) -> np.ndarray:
    """Grey canvas, a red square top-left and a green bar bottom-right: no symmetry."""
    pixels = np.full((height, width, 3), 90, dtype=np.uint8)
    pixels[:16, :16] = (230, 20, 20)
    pixels[height - 16 :, width - 32 :] = (20, 220, 20)
    return pixels


def stored_pixels(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for ``upright`` with this EXIF orientation (EXIF 2.3, Orientation)."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored horizontally
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1, :],  # mirrored vertically
        5: lambda a: a.transpose(1, 0, 2),  # mirrored across the main diagonal
        6: lambda a: np.rot90(a, 1),  # viewer rotates 90 degrees clockwise
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # mirrored across the anti-diagonal
        8: lambda a: np.rot90(a, -1),  # viewer rotates 90 degrees counter-clockwise
    }[orientation](upright).copy()


def save_oriented(path, upright, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.fromarray(stored_pixels(upright, orientation))
    if path.suffix == ".jpg":
        image.save(path, exif=exif, quality=95)
    else:
        image.save(path, exif=exif)
    # The test's own mapping agrees with Pillow's reference implementation.
    with Image.open(path) as check:
        assert check.getexif()[0x0112] == orientation
        reference = np.asarray(ImageOps.exif_transpose(check).convert("RGB"))
    assert reference.shape == upright.shape
    assert mean_abs_diff(reference, upright) < 3
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_read_image(tmp_path, orientation, suffix):
    upright = upright_pattern()
    path = save_oriented(tmp_path / f"o{orientation}{suffix}", upright, orientation)
    pixels = read_image(path)
    assert_upright_rgb(pixels, 64, 96)
    assert mean_abs_diff(pixels, upright) < 3
    red = pixels[4:12, 4:12].mean(axis=(0, 1))
    assert red[0] > 180 and red[1] < 60 and red[2] < 60  # red square top-left
    assert pixels[56, 80, 1] > 150 and pixels[56, 80, 0] < 80  # green bottom-right


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_image_size_jpeg(tmp_path, orientation):
    path = save_oriented(tmp_path / f"o{orientation}.jpg", upright_pattern(), orientation)
    assert image_size(path) == (96, 64)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_image_size_png(tmp_path, orientation):
    path = save_oriented(tmp_path / f"o{orientation}.png", upright_pattern(), orientation)
    assert image_size(path) == read_image(path).shape[1::-1] == (96, 64)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_load_input(tmp_path, orientation, suffix):
    upright = upright_pattern()
    path = save_oriented(tmp_path / f"o{orientation}{suffix}", upright, orientation)
    pixels, size = load_input(path, 32)
    assert size == (96, 64)
    assert_upright_rgb(pixels, 32, 32)
    expected = np.asarray(Image.fromarray(upright).resize((32, 32), Image.Resampling.BILINEAR))
    assert mean_abs_diff(pixels, expected) < 4
    # the top-left quarter of the upright image holds the red square
    corner, _ = load_input(path, 16, crop=(0.0, 0.0, 1 / 6, 0.25))
    assert corner[..., 0].mean() > 180 and corner[..., 1].mean() < 60


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_is_decoded_at_a_scale_covering_the_upright_size(tmp_path, orientation):
    upright = np.repeat(np.repeat(upright_pattern(), 8, axis=0), 8, axis=1)  # 768 x 512
    path = save_oriented(tmp_path / f"big{orientation}.jpg", upright, orientation)
    pixels = read_image(path, min_size=(190, 10))
    # upright width 768 must cover 190: 768/4 = 192 is the smallest eighth-scale that does
    assert pixels.shape == (128, 192, 3)
    assert pixels[:24, :24, 0].mean() > 180


# --------------------------------------------------------------------------- DCT scaling, crop


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A 1600x1200 JPEG: smooth gradients plus a red block in the right half's middle."""
    y, x = np.mgrid[0:1200, 0:1600]
    pixels = np.stack([x * 255 // 1600, y * 255 // 1200, (x + y) * 255 // 2800], axis=-1).astype(np.uint8)
    pixels[400:800, 1000:1400] = (250, 10, 10)
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(pixels).save(path, quality=92)
    return path


def test_read_image_decodes_at_the_smallest_dct_scale_that_covers(big_jpeg):
    assert read_image(big_jpeg).shape == (1200, 1600, 3)
    assert read_image(big_jpeg, min_size=(224, 224)).shape == (300, 400, 3)  # 1/4
    assert read_image(big_jpeg, min_size=(100, 100)).shape == (150, 200, 3)  # 1/8
    assert read_image(big_jpeg, min_size=(1600, 1200)).shape == (1200, 1600, 3)
    assert image_size(big_jpeg) == (1600, 1200)


def test_dct_ratio_picks_the_smallest_decode_that_covers():
    assert DCT_RATIOS == (1, 2, 4, 8)
    assert dct_ratio(1024, 768, 224, 224) == 2  # 1/4 would be 256 x 192
    assert dct_ratio(1024, 1024, 224, 224) == 4
    assert dct_ratio(2000, 2000, 224, 224) == 8
    assert dct_ratio(300, 200, 224, 224) == 1  # upscaled after decoding
    assert dct_ratio(225, 225, 113, 113) == 2  # ceil(225 / 2) = 113 covers
    assert dct_ratio(224, 224, 113, 113) == 1


def test_load_input_with_dct_scaling_matches_a_full_decode_and_resize(big_jpeg):
    pixels, size = load_input(big_jpeg, 224)
    assert size == (1600, 1200)
    assert_upright_rgb(pixels, 224, 224)
    full = Image.fromarray(read_image(big_jpeg))
    reference = np.asarray(full.resize((224, 224), Image.Resampling.BILINEAR))
    assert mean_abs_diff(pixels, reference) < 2.0
    assert np.abs(pixels.astype(int) - reference).max() < 40


def test_load_input_crop_selects_the_region(big_jpeg):
    crop = (0.5, 0.25, 1.0, 0.75)  # x 800..1600, y 300..900
    pixels, size = load_input(big_jpeg, 160, crop=crop)
    assert size == (1600, 1200)
    assert_upright_rgb(pixels, 160, 160)
    full = Image.fromarray(read_image(big_jpeg))
    reference = np.asarray(full.resize((160, 160), Image.Resampling.BILINEAR, box=(800, 300, 1600, 900)))
    assert mean_abs_diff(pixels, reference) < 2.0
    # the red block 1000..1400 x 400..800 maps to x 40..120, y 27..133 of the crop
    np.testing.assert_allclose(pixels[40:120, 50:110].mean(axis=(0, 1)), [250, 10, 10], atol=6)
    assert pixels[5:20, 5:30, 0].mean() < 200  # left of the block: the gradient, not red


def test_load_input_full_image_is_the_default(big_jpeg):
    a, _ = load_input(big_jpeg, 64)
    b, _ = load_input(big_jpeg, 64, crop=FULL_IMAGE)
    np.testing.assert_array_equal(a, b)
    assert FULL_IMAGE == (0.0, 0.0, 1.0, 1.0)


def test_load_input_png_goes_through_the_same_resize(tmp_path):
    pixels = quadrants(100, 60)
    path = tmp_path / "q.png"
    Image.fromarray(pixels).save(path)
    out, size = load_input(path, 50)
    assert size == (100, 60)
    np.testing.assert_array_equal(out, resize_region(pixels, (0, 0, 100, 60), 50))


# --------------------------------------------------------------------------- resize_region


def noise(height, width, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_resize_region_same_size_is_a_copy_and_integer_offsets_are_slices():
    pixels = noise(40, 40)
    np.testing.assert_array_equal(resize_region(pixels, (0, 0, 40, 40), 40), pixels)
    np.testing.assert_array_equal(resize_region(pixels, (5, 7, 25, 27), 20), pixels[7:27, 5:25])


@pytest.mark.parametrize("region", [(0, 0, 300, 260), (17, 3, 250, 240), (40, 40, 200, 120), (0, 0, 300, 100)])
def test_resize_region_agrees_with_tensorflow(region):
    tf = pytest.importorskip("tensorflow")
    pixels = noise(260, 300)
    x1, y1, x2, y2 = region
    size = 96 if region[3] == 100 else 160  # the last one shrinks 3.1x: area averaging
    method = "area" if max(x2 - x1, y2 - y1) / size >= 3 else "bilinear"
    reference = tf.image.resize(pixels[y1:y2, x1:x2], (size, size), method=method).numpy()
    out = resize_region(pixels, region, size).astype(np.float64)
    assert np.abs(out - reference).max() <= 1.5  # fixed-point weights in OpenCV
    assert mean_abs_diff(out, np.round(reference)) < 0.3


def test_pixel_region_snaps_crops_to_whole_pixels():
    assert pixel_region(FULL_IMAGE, 300, 200) == ((0, 0, 300, 200), FULL_IMAGE)
    assert pixel_region((0.101, 0.25, 0.799, 0.9), 300, 200) == ((30, 50, 240, 180), (0.1, 0.25, 0.8, 0.9))
    assert pixel_region((0.5, 0.5, 0.5001, 0.5001), 10, 10)[0] == (5, 5, 6, 6)  # never empty


def test_resize_region_area_averages_large_shrinks():
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: plain bilinear sampling would alias them
    out = resize_region(stripes, (0, 0, 64, 64), 8).astype(np.float64)
    np.testing.assert_allclose(out, 127.5, atol=1.0)


def test_pixel_scaling_constants_map_uint8_to_unit_range():
    from facegrid.model.network import PIXEL_OFFSET, PIXEL_SCALE

    assert pytest.approx(-1.0) == 0 * PIXEL_SCALE + PIXEL_OFFSET
    assert pytest.approx(1.0) == 255 * PIXEL_SCALE + PIXEL_OFFSET


# --------------------------------------------------------------------------- errors


def bad_files(tmp_path) -> dict:
    good = save_rgb_jpeg(tmp_path / "good.jpg", np.repeat(np.repeat(quadrants(), 4, 0), 4, 1))
    data = good.read_bytes()
    files = {
        "missing": tmp_path / "missing.jpg",
        "empty": tmp_path / "empty.jpg",
        "truncated-jpeg": tmp_path / "truncated.jpg",
        "random-bytes": tmp_path / "random.jpg",
        "text": tmp_path / "notes.txt",
        "truncated-png": tmp_path / "truncated.png",
        "directory": tmp_path / "folder.jpg",
    }
    files["empty"].write_bytes(b"")
    files["truncated-jpeg"].write_bytes(data[: len(data) // 2])
    files["random-bytes"].write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["text"].write_text("this is not an image\n" * 20)
    png = tmp_path / "whole.png"
    Image.fromarray(quadrants()).save(png)
    files["truncated-png"].write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    files["directory"].mkdir()
    return files


CASES = ["missing", "empty", "truncated-jpeg", "random-bytes", "text", "truncated-png", "directory"]


@pytest.mark.parametrize("reader", [read_image, verify_image], ids=["read_image", "verify_image"])
@pytest.mark.parametrize("case", CASES)
def test_broken_files_raise_image_error_naming_the_path(tmp_path, case, reader):
    path = bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as info:
        reader(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert info.value.reason
    assert isinstance(info.value, FacegridError)


@pytest.mark.parametrize("case", CASES)
def test_load_input_errors_name_the_path(tmp_path, case):
    path = bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as info:
        load_input(path, 32)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", ["missing", "empty", "random-bytes", "text", "directory"])
def test_image_size_errors_name_the_path(tmp_path, case):
    path = bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as info:
        image_size(path)
    assert str(path) in str(info.value)


def test_missing_and_empty_reasons(tmp_path):
    files = bad_files(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        read_image(files["missing"])
    with pytest.raises(ImageError, match="empty"):
        read_image(files["empty"])


# --------------------------------------------------------------------------- verify_image


def test_verify_image_returns_the_upright_size(tmp_path, big_jpeg, cmyk_jpeg):
    assert verify_image(big_jpeg) == (1600, 1200)
    assert verify_image(cmyk_jpeg) == (64, 48)
    for orientation in (1, 6, 8):
        for suffix in (".jpg", ".png"):
            path = save_oriented(tmp_path / f"v{orientation}{suffix}", upright_pattern(), orientation)
            assert verify_image(path) == (96, 64)


def test_verify_image_catches_a_jpeg_cut_near_its_end(tmp_path, big_jpeg):
    data = big_jpeg.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * 0.9)])
    assert image_size(path) == (1600, 1200)  # the header alone looks fine
    with pytest.raises(ImageError):
        verify_image(path)


def test_load_fitted_keeps_the_aspect_ratio_and_pads_to_32(tmp_path):
    from facegrid.data.geometry import fitted_size, load_fitted, padded_size

    pixels = np.zeros((300, 500, 3), np.uint8)
    pixels[:, 250:] = 200  # right half bright
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    x, original, fitted = load_fitted(tmp_path / "wide.png", 320)
    assert original == (500, 300) and fitted == (320, 192) == fitted_size(500, 300, 320)
    assert x.shape == (192, 320, 3)  # 192 is already a multiple of 32
    assert x[:, :150].max() == 0 and x[:, 170:].min() == 200
    x, _, fitted = load_fitted(tmp_path / "wide.png", 100)
    assert fitted == (100, 60) and x.shape == (64, 128, 3) and padded_size(100, 60) == (128, 64)
    assert x[60:].max() == 0 and x[:, 100:].max() == 0  # padding is black
