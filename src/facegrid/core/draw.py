"""Drawing boxes on pictures: the colours, and detections outlined with their scores.

Every picture facegrid makes for people (annotated detections, dataset
panels, a training run's validation panels) draws with these, so that a
colour means one thing everywhere: green a detection or a face kept for
training, red a face left out, blue the ground truth, yellow a box decoded
from a target.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

#: Colours: detections and faces kept, faces left out, boxes decoded from targets, grid lines,
#: ground truth, and the background of panels.
KEPT = (0, 230, 0)
DROPPED = (255, 60, 60)
DECODED = (255, 220, 0)
GRID = (255, 255, 255)
GROUND_TRUTH = (60, 160, 255)
BACKGROUND = (32, 32, 32)


def scaled(pixels: np.ndarray, scale: float) -> tuple[Image.Image, float]:
    """uint8 pixels as an image resized by ``scale``, and that scale."""
    image = Image.fromarray(pixels)
    resample = Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.NEAREST
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample), scale


def fit(pixels: np.ndarray, height: int) -> tuple[Image.Image, float]:
    """uint8 pixels as an image ``height`` pixels high, and the scale that takes."""
    return scaled(pixels, height / pixels.shape[0])


def draw_boxes(draw: ImageDraw.ImageDraw, boxes: np.ndarray, scale: float, color, width: int = 2) -> None:
    """Outline ``[N, 4]`` xyxy boxes, scaled by ``scale``."""
    for x1, y1, x2, y2 in (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale).tolist():
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color, width=width)


def draw_detections(
    draw: ImageDraw.ImageDraw, boxes: np.ndarray, scores: np.ndarray, scale: float, width: int = 2
) -> None:
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


def cut_text(view: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text``, its end cut and ``...`` put in its place where it is wider than ``width`` pixels."""
    if view.textlength(text) <= width:
        return text
    while text and view.textlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
