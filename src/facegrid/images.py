"""Image decoding: any photo in, upright RGB pixels out, at no more resolution than needed.

JPEGs are decoded by libjpeg-turbo (through simplejpeg) at the smallest DCT
scale (1/8 .. 8/8) whose output still covers the requested size, which skips
most of the decoding work for a 1024-pixel photo headed for a 224-pixel
network. Everything else (PNG, CMYK JPEG, 16-bit, palette, grayscale) goes
through Pillow. Either way the result is upright RGB: the EXIF orientation
tag is applied, so boxes drawn on the image as viewers show it stay right.

Pixels handed to the network are uint8 RGB; models map them to ``[-1, 1]``
with ``x * PIXEL_SCALE + PIXEL_OFFSET`` (MobileNetV2's preprocessing), inside
the model, so batches stay four times smaller than float32.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import ExifTags, Image

#: uint8 pixels become ``x * PIXEL_SCALE + PIXEL_OFFSET``, in ``[-1, 1]``.
PIXEL_SCALE = 1.0 / 127.5
PIXEL_OFFSET = -1.0

#: The whole image, as a relative crop ``[x1, y1, x2, y2]``.
FULL_IMAGE = (0.0, 0.0, 1.0, 1.0)

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_SEARCH = 1 << 16  # EXIF lives in APP1, right after the start-of-image marker
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """An image cannot be read: missing, empty, truncated or not an image.

    Attributes:
        path: the image file.
        reason: what went wrong.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _orientation(data: bytes) -> int:
    if data.find(b"Exif\x00\x00", 0, _EXIF_SEARCH) < 0:
        return 1
    with Image.open(io.BytesIO(data)) as image:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _TRANSPOSE else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(wide / 257.0, 0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def _decode(data: bytes, min_width: int, min_height: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode to an upright RGB image covering at least ``min_width x min_height``.

    Returns the image and the full-resolution upright size ``(width, height)``.
    """
    orientation = _orientation(data) if data.startswith(_JPEG_MAGIC) else 1
    swapped = orientation in (5, 6, 7, 8)
    raw_min = (min_height, min_width) if swapped else (min_width, min_height)
    if data.startswith(_JPEG_MAGIC):
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("CMYK", "YCCK"):
            pixels = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_width=raw_min[0], min_height=raw_min[1], strict=True
            )
            image = Image.fromarray(pixels)
            if orientation != 1:
                image = image.transpose(_TRANSPOSE[orientation])
            return image, ((height, width) if swapped else (width, height))
    with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
        if max(raw_min) > 0:
            opened.draft(opened.mode, (max(raw_min[0], 1), max(raw_min[1], 1)))
        opened.load()
        orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
        image = _to_rgb(opened)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    return image, (width, height)


def _read(path: str | os.PathLike) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as error:
        raise ImageError(path, f"cannot read: {error.strerror or error}") from None
    if not data:
        raise ImageError(path, "file is empty")
    return data


def _guarded(path, action):
    try:
        return action()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"too many pixels: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(path, f"not a readable image ({error})") from None


def read_image(path: str | os.PathLike, min_size: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Decode an image file to upright uint8 RGB ``[H, W, 3]``.

    Args:
        path: a JPEG, PNG or any format Pillow reads.
        min_size: ``(width, height)`` the result must at least cover; JPEGs are
            then decoded at the smallest DCT scale that does. ``(0, 0)``
            decodes at full resolution.

    Raises:
        ImageError: missing, empty, truncated or not an image.
    """
    data = _read(path)
    image, _ = _guarded(path, lambda: _decode(data, *min_size))
    return np.asarray(image)


def verify_image(path: str | os.PathLike) -> tuple[int, int]:
    """Decode a whole image (at the smallest DCT scale) and return its upright ``(width, height)``.

    Every byte of compressed data is read, so truncated and corrupt files are
    caught, at a fraction of the cost of a full-resolution decode.

    Raises:
        ImageError: missing, empty, truncated or not an image.
    """
    data = _read(path)
    _, size = _guarded(path, lambda: _decode(data, 1, 1))
    return size


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Upright ``(width, height)`` of an image, from its header alone."""
    data = _read(path)

    def header():
        if data.startswith(_JPEG_MAGIC):
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            size, orientation = (width, height), _orientation(data)
        else:
            with Image.open(io.BytesIO(data)) as image:
                size, orientation = image.size, image.getexif().get(ExifTags.Base.Orientation, 1)
        return size[::-1] if orientation in (5, 6, 7, 8) else size

    return _guarded(path, header)


def load_input(
    path: str | os.PathLike, size: int, crop: tuple[float, float, float, float] = FULL_IMAGE
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode, crop and resize an image to the ``size x size`` network input.

    The image is stretched to a square (no letterbox), so a box maps to the
    input by scaling x and y separately.

    Args:
        path: the image file.
        size: side of the square output, in pixels.
        crop: region to keep, ``[x1, y1, x2, y2]`` as fractions of the upright image.

    Returns:
        ``(pixels, (width, height))``: uint8 ``[size, size, 3]`` RGB and the
        upright full-resolution size of the file.

    Raises:
        ImageError: missing, empty, truncated or not an image.
    """
    x1, y1, x2, y2 = crop
    data = _read(path)

    def run():
        min_width = int(np.ceil(size / max(x2 - x1, 1e-6)))
        min_height = int(np.ceil(size / max(y2 - y1, 1e-6)))
        image, original = _decode(data, min_width, min_height)
        w, h = image.size
        region = (x1 * w, y1 * h, x2 * w, y2 * h)
        resized = image.resize((size, size), Image.Resampling.BILINEAR, box=region)
        return np.asarray(resized), original

    return _guarded(path, run)
