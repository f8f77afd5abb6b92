"""Image decoding: any photo in, upright RGB pixels out, at no more resolution than needed.

JPEGs are decoded by libjpeg-turbo (through simplejpeg) at the smallest DCT
scale of 1/1, 1/2, 1/4 or 1/8 whose output still covers the requested size,
which skips most of the decoding work for a 1024-pixel photo headed for a
224-pixel network. Only these four scales are used: libjpeg-turbo has fast
paths for them (faster than the eighths between), and TensorFlow's decoder
offers exactly them, so the tf.data pipeline decodes the same pixels
(:func:`decoded_size` is the rule both follow). Everything else (PNG, CMYK
JPEG, 16-bit, palette, grayscale) goes through Pillow. Either way the result
is upright RGB: the EXIF orientation tag is applied, so boxes drawn on the
image as viewers show it stay right.

What becomes of the pixels next (the crop, the resize to the network input)
is :mod:`facegrid.data.geometry`'s; the pixels stay uint8 RGB all the way
into the model, which scales them itself (:mod:`facegrid.model.network`).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import ExifTags, Image

from facegrid.core.errors import ImageError, MissingImageError

#: DCT scales JPEGs are decoded at, as ratios (full size / decoded size).
DCT_RATIOS = (1, 2, 4, 8)

#: Images with more pixels than this are refused before decoding (decompression
#: bombs: a small file claiming a huge image). Pillow's own warning threshold.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS

_JPEG_MAGIC = b"\xff\xd8\xff"
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations whose upright image is the stored one turned a quarter

#: JPEG colour spaces that libjpeg does not decode to RGB itself; Pillow converts them.
_CONVERTED_COLORSPACES = ("CMYK", "YCCK")


def _has_exif(data: bytes) -> bool:
    """Whether a JPEG carries an EXIF block: an APP1 segment among those before the image data."""
    at = 2
    while at + 10 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xE1 and data[at + 4 : at + 10] == b"Exif\x00\x00":
            return True
        if marker == 0xDA or not 0xE0 <= marker <= 0xFE:  # image data, or past the application segments
            return False
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return False


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened image: 1 (stored upright) when it has none, or none of the eight."""
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _TRANSPOSE else 1


def _orientation(data: bytes) -> int:
    """:func:`_exif_orientation` of a JPEG's bytes, which are opened only when they hold an EXIF block."""
    if not _has_exif(data):
        return 1
    with Image.open(io.BytesIO(data)) as image:
        return _exif_orientation(image)


def _turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``(width, height)`` seen in the other frame: orientations 5 to 8 turn the image a quarter, swapping its sides.

    The same both ways: from the stored frame to the upright one, and back.
    """
    return (size[1], size[0]) if orientation in _QUARTER_TURNS else size


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(wide / 257.0, 0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def dct_ratio(width: int, height: int, min_width: int, min_height: int) -> int:
    """The largest of :data:`DCT_RATIOS` whose decode of a ``width x height`` JPEG covers ``min_width x min_height``."""
    best = 1
    for ratio in DCT_RATIOS:
        if math.ceil(width / ratio) >= min_width and math.ceil(height / ratio) >= min_height:
            best = ratio
    return best


def decoded_size(info: ImageInfo, min_width: int, min_height: int) -> tuple[int, tuple[int, int]]:
    """DCT ratio and upright ``(width, height)`` at which an image is decoded to cover ``min_width x min_height``.

    Only JPEGs that libjpeg decodes to RGB itself (``info.jpeg``) are scaled.
    """
    if not info.jpeg:
        return 1, (info.width, info.height)
    width, height = _turned((info.width, info.height), info.orientation)  # the decoder sees the stored frame
    ratio = dct_ratio(width, height, *_turned((min_width, min_height), info.orientation))
    return ratio, _turned((math.ceil(width / ratio), math.ceil(height / ratio)), info.orientation)


class _TooManyPixels(ValueError):
    pass


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise _TooManyPixels(f"too many pixels: {width} x {height} exceeds the limit of {MAX_PIXELS:,}")


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels turned upright, as EXIF ``orientation`` says."""
    if orientation == 1:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(_TRANSPOSE[orientation]))


def _decode(data: bytes, min_width: int, min_height: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to upright uint8 RGB pixels covering at least ``min_width x min_height``.

    Returns the pixels and the full-resolution upright size ``(width, height)``.
    """
    jpeg = data.startswith(_JPEG_MAGIC)
    orientation = _orientation(data) if jpeg else 1
    if jpeg:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        _check_pixels(width, height)
        if colorspace not in _CONVERTED_COLORSPACES:
            upright = _turned((width, height), orientation)
            if max(min_width, min_height) > 0:  # the scale rule the tf.data pipeline plans with too
                _, decoded = decoded_size(ImageInfo(*upright, orientation, jpeg=True), min_width, min_height)
            else:
                decoded = upright
            stored = _turned(decoded, orientation)
            pixels = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_width=stored[0], min_height=stored[1], strict=True
            )
            return _upright(pixels, orientation), upright
    raw_min = _turned((min_width, min_height), orientation)
    with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
        _check_pixels(width, height)
        if max(raw_min) > 0:
            opened.draft(opened.mode, (max(raw_min[0], 1), max(raw_min[1], 1)))
        opened.load()
        orientation = _exif_orientation(opened)
        pixels = np.asarray(_to_rgb(opened))
    return _upright(pixels, orientation), _turned((width, height), orientation)


def read_image_bytes(path: str | os.PathLike, limit: int = -1) -> bytes:
    """An image file's bytes (its first ``limit`` when ``limit`` >= 0), for :func:`decode_data` and :func:`probe_data`.

    Raises:
        ImageError: missing, unreadable or empty.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)
    except FileNotFoundError:
        raise MissingImageError(path, "no such file") from None
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
    except _TooManyPixels as error:
        raise ImageError(path, str(error)) from None
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"too many pixels: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(path, f"not a readable image ({error})") from None


def decode_data(
    data: bytes, name: str | os.PathLike, min_size: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image's bytes to upright uint8 RGB ``[H, W, 3]``; ``name`` names them in errors.

    Args:
        data: a JPEG, PNG or any format Pillow reads.
        name: the file the bytes are of.
        min_size: ``(width, height)`` the result must at least cover; JPEGs are
            then decoded at the smallest DCT scale that does (:func:`decoded_size`).
            ``(0, 0)`` decodes at full resolution.

    Returns:
        ``(pixels, (width, height))``: the pixels and the image's upright
        full-resolution size.

    Raises:
        ImageError: empty, truncated or not an image.
    """
    if not data:
        raise ImageError(name, "file is empty")
    return _guarded(name, lambda: _decode(data, *min_size))


def read_image(path: str | os.PathLike, min_size: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Decode an image file to upright uint8 RGB ``[H, W, 3]`` (see :func:`decode_data`).

    Raises:
        ImageError: missing, empty, truncated or not an image.
    """
    pixels, _ = decode_data(read_image_bytes(path), path, min_size)
    return pixels


def verify_image(path: str | os.PathLike) -> tuple[int, int]:
    """Decode a whole image (at the smallest DCT scale) and return its upright ``(width, height)``.

    Every byte of compressed data is read, so truncated and corrupt files are
    caught, at a fraction of the cost of a full-resolution decode.

    Raises:
        ImageError: missing, empty, truncated or not an image.
    """
    return verify_data(read_image_bytes(path), path)


def verify_data(data: bytes, name: str | os.PathLike) -> tuple[int, int]:
    """:func:`verify_image` of an image's bytes already in memory; ``name`` names them in errors.

    Raises:
        ImageError: empty, truncated or not an image.
    """
    _, size = decode_data(data, name, (1, 1))
    return size


def read_verified(path: str | os.PathLike) -> tuple[bytes, ImageInfo]:
    """An image file's bytes as stored, and its :class:`ImageInfo`, once every byte decodes (see :func:`verify_image`).

    Raises:
        ImageError: missing, empty, truncated or not an image.
    """
    data = read_image_bytes(path)
    verify_data(data, path)
    return data, probe_data(data, path)


@dataclass(frozen=True)
class ImageInfo:
    """What a pipeline needs to know of an image before decoding it.

    Attributes:
        width, height: upright full-resolution size.
        orientation: the EXIF orientation tag (1 = stored upright).
        jpeg: a JPEG that libjpeg decodes to RGB itself (not CMYK or YCCK),
            so any JPEG decoder can scale it in the DCT domain.
    """

    width: int
    height: int
    orientation: int = 1
    jpeg: bool = False


_HEAD_BYTES = 1 << 16  # holds the EXIF block and frame header of nearly every JPEG


def _header(data: bytes) -> ImageInfo:
    """The :class:`ImageInfo` of an image from its first bytes (ValueError or PIL errors if they do not tell)."""
    if data.startswith(_JPEG_MAGIC):
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        orientation, jpeg = _orientation(data), colorspace not in _CONVERTED_COLORSPACES
    else:
        with Image.open(io.BytesIO(data)) as image:
            (width, height), orientation = image.size, _exif_orientation(image)
        jpeg = False
    _check_pixels(width, height)
    return ImageInfo(*_turned((width, height), orientation), orientation, jpeg)


def probe(path: str | os.PathLike) -> ImageInfo:
    """Read an image's size, orientation and kind from its first bytes.

    Raises:
        ImageError: missing, empty, or not an image.
    """
    head = read_image_bytes(path, _HEAD_BYTES)

    if len(head) == _HEAD_BYTES:
        if head.startswith(_JPEG_MAGIC):
            try:
                return _header(head)
            except ValueError:
                pass  # the frame header lies further in
        head = read_image_bytes(path)  # other formats may keep their EXIF block at the end
    return probe_data(head, path)


def probe_data(data: bytes, name: str | os.PathLike) -> ImageInfo:
    """:func:`probe` of an image file's bytes in memory (a packed image, a file read whole), called ``name`` in errors.

    Raises:
        ImageError: not an image.
    """
    return _guarded(name, lambda: _header(data))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Upright ``(width, height)`` of an image, from its header alone."""
    info = probe(path)
    return info.width, info.height
