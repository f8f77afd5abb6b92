"""Pictures for people: boxes drawn on images, and what the network is shown.

:func:`example_panel` puts side by side the original image with its
annotated boxes and the ``S x S`` network input with the grid and the boxes
decoded back from its target, so a user can see at a glance that targets sit
on the faces. For a pyramid of grids it shows the input once per level, with
that level's grid, its positive cells (filled) and ignore cells (grey), and the
boxes decoded from them: which faces went to which level, on how many cells.

:func:`detections_panel` tiles a few images with a model's detections and
their ground truth, so that a training run shows what its model finds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.errors import ImageError
from facegrid.core.files import check_outputs, write_atomically
from facegrid.core.paths import image_path
from facegrid.data.examples import ExampleBuilder
from facegrid.data.images import read_image
from facegrid.wider.index import FaceFilter, Index

log = logging.getLogger(__name__)

KEPT = (0, 230, 0)
DROPPED = (255, 60, 60)
DECODED = (255, 220, 0)
GRID = (255, 255, 255)
GROUND_TRUTH = (60, 160, 255)
BACKGROUND = (32, 32, 32)

#: Images a training run's validation panel shows (:mod:`facegrid.train.run`).
PANEL_IMAGES = 6

#: Side of each image's square in :func:`detections_panel`, and squares in a row.
PANEL_TILE = 320
PANEL_COLUMNS = 3

# Heights of a panel's title strip and of each square's caption.
_HEADER = 22
_CAPTION = 18


def _scaled(pixels: np.ndarray, scale: float) -> tuple[Image.Image, float]:
    image = Image.fromarray(pixels)
    resample = Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.NEAREST
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample), scale


def _fit(pixels: np.ndarray, height: int) -> tuple[Image.Image, float]:
    return _scaled(pixels, height / pixels.shape[0])


def draw_boxes(draw: ImageDraw.ImageDraw, boxes: np.ndarray, scale: float, color, width: int = 2) -> None:
    """Outline ``[N, 4]`` xyxy boxes, scaled by ``scale``."""
    for x1, y1, x2, y2 in (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale).tolist():
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color, width=width)


def draw_detections(draw: ImageDraw.ImageDraw, boxes: np.ndarray, scores: np.ndarray, scale: float,
                    width: int = 2) -> None:
    """Outline ``[K, 4]`` xyxy detections, scaled by ``scale``, each labelled with its score above it."""
    draw_boxes(draw, boxes, scale, KEPT, width)
    corners = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[:, :2] * scale).tolist()
    for (x1, y1), score in zip(corners, np.asarray(scores).tolist()):
        draw.text((x1, max(0, y1 - 12)), f"{score:.2f}", fill=KEPT)


def annotated_image(pixels: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> Image.Image:
    """The image with each detection outlined and labelled with its score."""
    image = Image.fromarray(pixels)
    draw_detections(ImageDraw.Draw(image), boxes, scores, 1.0, max(2, round(min(image.size) / 300)))
    return image


@dataclass(frozen=True, eq=False)
class PanelImage:
    """One image of :func:`detections_panel`.

    Attributes:
        pixels: uint8 ``[H, W, 3]``, or None for an image that could not be read.
        truth: ``[G, 4]`` xyxy ground-truth faces in its pixels.
        boxes: ``[K, 4]`` xyxy detections in its pixels.
        scores: ``[K]`` their scores.
        caption: the line under it.
    """

    pixels: np.ndarray | None
    truth: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    caption: str


def detections_panel(images: Sequence[PanelImage], title: str) -> Image.Image:
    """One picture tiling ``images``, :data:`PANEL_COLUMNS` a row, under ``title``.

    Each image is fitted into a :data:`PANEL_TILE` square, aspect ratio kept,
    with its ground truth outlined blue and its detections green, labelled
    with their scores; its caption is below it, cut short to the square's
    width (put what must show first). The picture is
    ``PANEL_TILE * min(len(images), PANEL_COLUMNS)`` pixels wide and
    ``_HEADER + rows * (PANEL_TILE + _CAPTION)`` high, whatever the images' sizes.
    """
    columns = max(1, min(len(images), PANEL_COLUMNS))
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * PANEL_TILE, _HEADER + rows * (PANEL_TILE + _CAPTION)), BACKGROUND)
    view = ImageDraw.Draw(canvas)
    view.text((4, 4), title, fill=(255, 255, 255))
    for k, image in enumerate(images):
        left, top = (k % columns) * PANEL_TILE, _HEADER + (k // columns) * (PANEL_TILE + _CAPTION)
        if image.pixels is None:
            view.text((left + 8, top + PANEL_TILE // 2), "not readable", fill=DROPPED)
        else:
            fitted, scale = _scaled(image.pixels, PANEL_TILE / max(image.pixels.shape[:2]))
            draw = ImageDraw.Draw(fitted)
            draw_boxes(draw, image.truth, scale, GROUND_TRUTH)
            draw_detections(draw, image.boxes, image.scores, scale)
            canvas.paste(fitted, (left + (PANEL_TILE - fitted.width) // 2, top + (PANEL_TILE - fitted.height) // 2))
        view.text((left + 4, top + PANEL_TILE + 3), _cut(view, image.caption, PANEL_TILE - 8), fill=(255, 255, 255))
    return canvas


def _cut(view: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text``, its end cut and ``...`` put in its place where it is wider than ``width`` pixels."""
    if view.textlength(text) <= width:
        return text
    while text and view.textlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


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
    left, left_scale = _fit(original, height)
    right, right_scale = _fit(x, height)
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
            shown = len(np.unique(np.round(decoded, 2), axis=0))
            layout = "pyramid " + "/".join(map(str, builder.codec.strides))
        else:
            shown = int((y[..., 0] == 1).sum())
            layout = f"{builder.codec.grid_size}x{builder.codec.grid_size}"
        title = f"{index.paths[i]}  {faces} face(s), {shown} in the {layout} target"
        panel = example_panel(original, boxes[keep[rows]], boxes[~keep[rows]], x, y, builder.codec, title)
        write_atomically(target, lambda tmp: panel.save(tmp, format="PNG"))
        written.append(target)
    return written, failed
