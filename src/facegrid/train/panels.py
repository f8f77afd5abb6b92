"""A training run's validation panels: a few images with the model's detections over their faces.

Every ``panels_every`` epochs a run draws :data:`PANEL_IMAGES` validation
images into ``panels/epoch_NNN.jpg`` (:mod:`facegrid.train.run`), so that a
run shows what its model finds, not only its AP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from facegrid.core.draw import (
    BACKGROUND,
    DROPPED,
    GROUND_TRUTH,
    cut_text,
    draw_boxes,
    draw_detections,
    scaled,
)

#: Images a training run's validation panel shows.
PANEL_IMAGES = 6

#: Side of each image's square in :func:`detections_panel`, and squares in a row.
PANEL_TILE = 320
PANEL_COLUMNS = 3

# Heights of a panel's title strip and of each square's caption.
_HEADER = 22
_CAPTION = 18


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
            fitted, scale = scaled(image.pixels, PANEL_TILE / max(image.pixels.shape[:2]))
            draw = ImageDraw.Draw(fitted)
            draw_boxes(draw, image.truth, scale, GROUND_TRUTH)
            draw_detections(draw, image.boxes, image.scores, scale)
            canvas.paste(fitted, (left + (PANEL_TILE - fitted.width) // 2, top + (PANEL_TILE - fitted.height) // 2))
        view.text((left + 4, top + PANEL_TILE + 3), cut_text(view, image.caption, PANEL_TILE - 8), fill=(255, 255, 255))
    return canvas
