"""What the network is shown: ``facegrid data show``'s pictures of training examples.

:func:`example_panel` puts side by side the original image with its
annotated boxes and the ``S x S`` network input with the grid and the boxes
decoded back from its target, so a user can see at a glance that targets sit
on the faces. For a pyramid of grids it shows the input once per level, with
that level's grid, its positive cells (filled) and ignore cells (grey), and the
boxes decoded from them: which faces went to which level, on how many cells.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.draw import DECODED, DROPPED, GRID, KEPT, draw_boxes, fit
from facegrid.core.errors import ImageError
from facegrid.core.files import check_outputs, write_atomically
from facegrid.core.paths import image_path
from facegrid.data.examples import ExampleBuilder
from facegrid.data.images import read_image
from facegrid.wider.index import FaceFilter, Index

log = logging.getLogger(__name__)


def example_panel(
    original: np.ndarray,
    kept: np.ndarray,
    dropped: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    codec: GridCodec | PyramidCodec,
    title: str,
    height: int = 448,
) -> Image.Image:
    """One picture: original with boxes (left), network input with grid and decoded target (right).

    Args:
        original: uint8 ``[H, W, 3]`` image at any resolution; boxes are scaled to it.
        kept: ``[N, 4]`` xyxy faces used as targets, in original-image pixels, drawn green.
        dropped: faces the filter left out (invalid, zero-size...), drawn red.
        x: uint8 ``[S, S, 3]`` network input.
        y: ``[G, G, 5]`` (or pyramid ``[N, 5]``) target of ``x``; its decoded boxes are drawn yellow.
        codec: the codec that made ``y``.
        title: caption above the picture.
        height: height of each half in pixels.
    """
    left, left_scale = fit(original, height)
    right, right_scale = fit(x, height)
    header = 22
    left_view = ImageDraw.Draw(left)
    draw_boxes(left_view, dropped, left_scale, DROPPED)
    draw_boxes(left_view, kept, left_scale, KEPT)

    size = x.shape[0]
    if isinstance(codec, PyramidCodec):
        panels = [_level_panel(right.copy(), right_scale, y, codec, level, size) for level in range(len(codec.strides))]
    else:
        right_view = ImageDraw.Draw(right)
        _grid_lines(right_view, right.width / codec.grid_size, right.width)
        boxes, _ = codec.decode(y, size, size)
        _draw_decoded(right_view, boxes, right_scale)
        panels = [right]
    canvas = Image.new("RGB", (left.width + sum(p.width + 10 for p in panels), height + header), (32, 32, 32))
    ImageDraw.Draw(canvas).text((4, 4), title, fill=(255, 255, 255))
    canvas.paste(left, (0, header))
    offset = left.width + 10
    for panel in panels:
        canvas.paste(panel, (offset, header))
        offset += panel.width + 10
    return canvas


def _grid_lines(view: ImageDraw.ImageDraw, step: float, extent: int) -> None:
    for k in range(1, round(extent / step)):
        view.line([(k * step, 0), (k * step, extent)], fill=GRID, width=1)
        view.line([(0, k * step), (extent, k * step)], fill=GRID, width=1)


def _draw_decoded(view: ImageDraw.ImageDraw, boxes: np.ndarray, scale: float) -> None:
    draw_boxes(view, boxes, scale, DECODED)
    for cx, cy in ((boxes[:, :2] + boxes[:, 2:]) / 2 * scale).tolist():
        view.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=DECODED)


def _level_panel(
    image: Image.Image, scale: float, y: np.ndarray, codec: PyramidCodec, level: int, size: int
) -> Image.Image:
    """The input with one pyramid level's grid, positive and ignore cells, and the boxes its positives decode to."""
    centres, strides, levels = codec.cell_table(size, size)
    mine = levels == level
    stride = codec.strides[level]
    shade = Image.new("RGBA", image.size, (0, 0, 0, 0))
    shading = ImageDraw.Draw(shade)
    for (cx, cy), value in zip(centres[mine].tolist(), y[mine, 0].tolist()):
        if value != 0:
            x1, y1 = (cx - stride / 2) * scale, (cy - stride / 2) * scale
            fill = (*DECODED, 110) if value > 0 else (160, 160, 160, 110)
            shading.rectangle([x1, y1, x1 + stride * scale, y1 + stride * scale], fill=fill)
    image = Image.alpha_composite(image.convert("RGBA"), shade).convert("RGB")
    view = ImageDraw.Draw(image)
    if stride * scale >= 6:
        _grid_lines(view, stride * scale, image.width)
    only = np.where(mine[:, None], y, 0.0)  # this level's cells alone
    boxes, _ = codec.decode(only, size, size)
    _draw_decoded(view, boxes, scale)
    positives = int((y[mine, 0] > 0).sum())
    view.text((4, 4), f"stride {stride}: {positives} positive cells", fill=(255, 255, 255))
    return image


def show_dataset(
    index: Index,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    count: int = 8,
    builder: ExampleBuilder = ExampleBuilder(),
    face_filter: FaceFilter = FaceFilter(),
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[list[Path], list[ImageError]]:
    """Write :func:`example_panel` PNGs for the first ``count`` images of ``index``, as ``NNNN_<name>.png``.

    Returns:
        The PNGs written and the images that could not be read (skipped).

    Raises:
        facegrid.core.errors.OutputExistsError: a PNG to write exists, and not ``overwrite``.
        facegrid.core.errors.OverwritesInputError: a PNG to write is an input (the annotation file, an image).
    """
    out = Path(out)
    shown = range(min(count, len(index)))
    targets = [out / f"{i:04d}_{Path(str(index.paths[i])).stem}.png" for i in shown]
    check_outputs(targets, [index.source] + [Path(images) / str(index.paths[i]) for i in shown], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    keep = face_filter.mask(index)
    written, failed = [], []
    for i, target in zip(shown, targets):
        rows = slice(index.offsets[i], index.offsets[i + 1])
        boxes = index.image_boxes(i)
        try:
            path = image_path(images, str(index.paths[i]))
            original = read_image(path)
            x, y = builder(path, boxes[keep[rows]], np.random.default_rng([seed, i]), ignore=boxes[~keep[rows]])
        except ImageError as error:
            log.warning("skipped %s", error)
            failed.append(error)
            continue
        faces = int(keep[rows].sum())
        if isinstance(builder.codec, PyramidCodec):  # a face is decoded once per positive cell
            decoded, _ = builder.codec.decode(y, builder.input_size, builder.input_size)
            in_target = len(np.unique(np.round(decoded, 2), axis=0))
            layout = "pyramid " + "/".join(map(str, builder.codec.strides))
        else:
            in_target = int((y[..., 0] == 1).sum())
            layout = f"{builder.codec.grid_size}x{builder.codec.grid_size}"
        title = f"{index.paths[i]}  {faces} face(s), {in_target} in the {layout} target"
        panel = example_panel(original, boxes[keep[rows]], boxes[~keep[rows]], x, y, builder.codec, title)
        write_atomically(target, functools.partial(panel.save, format="PNG"))
        written.append(target)
    return written, failed
