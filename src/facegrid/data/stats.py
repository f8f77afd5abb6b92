"""Dataset statistics: faces per image, face sizes, and what a grid can represent.

A ``G x G`` grid holds one face per cell, so crowded images lose faces to
their neighbours. :func:`dataset_stats` measures, for each grid size, the share
of (filtered) faces that get a cell of their own: the ceiling on recall for a
detector of that grid before any training. A pyramid of grids
(:class:`facegrid.core.codec.PyramidCodec`) spreads faces over levels by size and
gives each several cells; its share is measured the same way, on the images as
detection sees them (longer side resized, aspect kept).

Cell assignment needs each image's size. Sizes come from the image headers
when the images are at hand; otherwise each image is taken to be as large as
the extent of its boxes (a lower bound), and the report says how many sizes
were estimated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.config import Config
from facegrid.core.errors import ImageError
from facegrid.core.figures import new_figure, save_figure
from facegrid.core.paths import image_path
from facegrid.data.geometry import fitted_size, padded_size
from facegrid.data.images import image_size
from facegrid.wider.index import FaceFilter, Index

#: Face-size buckets, in pixels of the network input (``sqrt(w * h)``).
SIZE_BUCKETS = (0, 4, 8, 16, 32, 64, np.inf)


@dataclass
class DatasetStats:
    """Figures from :func:`dataset_stats`.

    Attributes:
        images: images in the file.
        face_rows: face rows in the file.
        faces: faces kept by the filter (the training targets).
        sizes_estimated: images whose size was estimated from their boxes.
        input_size: network input side used for face sizes in input pixels.
        faces_per_image: ``[M]`` kept faces per image.
        face_px: ``[F]`` ``sqrt(w * h)`` of each kept face in original pixels.
        face_input_px: ``[F]`` the same in network-input pixels.
        representable: configuration (``"7x7"``, ``"pyramid 8/16/32 @320"``) -> share
            of kept faces with a cell of their own.
    """

    images: int
    face_rows: int
    faces: int
    sizes_estimated: int
    input_size: int
    faces_per_image: np.ndarray
    face_px: np.ndarray
    face_input_px: np.ndarray
    representable: dict[str, float]

    def size_table(self) -> list[tuple[str, int, float]]:
        """Rows ``(bucket label, faces, share)`` of the face-size histogram in input pixels."""
        counts, _ = np.histogram(self.face_input_px, bins=np.array(SIZE_BUCKETS, dtype=float))
        rows = []
        for low, high, count in zip(SIZE_BUCKETS[:-1], SIZE_BUCKETS[1:], counts.tolist()):
            label = f">= {low}" if np.isinf(high) else f"{low}-{high}"
            rows.append((label, count, count / max(self.faces, 1)))
        return rows

    def to_dict(self) -> dict:
        per_image = self.faces_per_image
        return {
            "images": self.images,
            "face_rows": self.face_rows,
            "faces": self.faces,
            "sizes_estimated": self.sizes_estimated,
            "faces_per_image": {
                "mean": float(per_image.mean()) if len(per_image) else 0.0,
                "median": float(np.median(per_image)) if len(per_image) else 0.0,
                "max": int(per_image.max()) if len(per_image) else 0,
                "without_faces": int((per_image == 0).sum()),
            },
            "face_size_px_percentiles": _percentiles(self.face_px),
            f"face_size_input{self.input_size}_px": {label: count for label, count, _ in self.size_table()},
            "representable": dict(self.representable),
        }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    points = np.percentile(values, [5, 25, 50, 75, 95])
    return {f"p{p}": round(float(v), 1) for p, v in zip((5, 25, 50, 75, 95), points)}


def image_sizes(index: Index, images: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    """``[M, 2]`` float32 (width, height) per image and ``[M]`` bool "was estimated".

    Sizes are read from image headers under ``images`` where possible, else
    estimated as the extent of the image's boxes.
    """
    xyxy = index.boxes[:, :2] + index.boxes[:, 2:]
    extent = np.zeros((len(index), 2), dtype=np.float32)
    has_faces = np.diff(index.offsets) > 0
    if index.num_faces:
        starts = index.offsets[:-1][has_faces]
        extent[has_faces] = np.maximum.reduceat(xyxy, starts, axis=0)
    extent = np.maximum(extent, 1.0)
    estimated = np.ones(len(index), dtype=bool)
    if images is not None:
        for i, name in enumerate(index.paths.tolist()):
            try:
                extent[i] = image_size(image_path(images, name))
                estimated[i] = False
            except ImageError:
                pass
    return extent, estimated


def dataset_stats(
    index: Index,
    images: str | os.PathLike | None = None,
    *,
    face_filter: FaceFilter = FaceFilter(),
    input_size: int = Config.input_size,
    grid_sizes: tuple[int, ...] = (7, 14, 28),
    pyramid: tuple[PyramidCodec, int] | None = None,
) -> DatasetStats:
    """Compute :class:`DatasetStats` for an index (see the module docstring).

    Args:
        pyramid: also the share a pyramid codec represents when images are
            detected with their longer side at the given size (aspect kept).
    """
    sizes, estimated = image_sizes(index, images)
    kept = face_filter.apply(index)
    per_image = kept.faces_per_image()
    owner = np.repeat(np.arange(len(kept)), per_image)
    xyxy = np.concatenate([kept.boxes[:, :2], kept.boxes[:, :2] + kept.boxes[:, 2:]], axis=1).astype(np.float32)
    w, h = sizes[owner, 0], sizes[owner, 1]
    sides = kept.boxes[:, 2:].astype(np.float64)
    face_px = np.sqrt(sides[:, 0] * sides[:, 1])
    face_input_px = np.sqrt(sides[:, 0] * input_size / w * sides[:, 1] * input_size / h)
    representable = {}
    for g in grid_sizes:
        cells, visible = GridCodec(g).cells(xyxy, w, h)
        keys = (owner * g + cells[:, 1]) * g + cells[:, 0]
        representable[f"{g}x{g}"] = len(np.unique(keys[visible])) / max(kept.num_faces, 1)
    if pyramid is not None:
        codec, longer_side = pyramid
        name = f"pyramid {'/'.join(map(str, codec.strides))} @{longer_side}"
        representable[name] = pyramid_share(codec, longer_side, xyxy, owner, sizes)
    return DatasetStats(
        images=len(index),
        face_rows=index.num_faces,
        faces=kept.num_faces,
        sizes_estimated=int(estimated.sum()),
        input_size=input_size,
        faces_per_image=per_image,
        face_px=face_px,
        face_input_px=face_input_px,
        representable=representable,
    )


def pyramid_share(
    codec: PyramidCodec, longer_side: int, boxes: np.ndarray, owner: np.ndarray, sizes: np.ndarray
) -> float:
    """Share of faces with a cell of their own in ``codec`` when each image's longer side is ``longer_side``.

    Args:
        boxes: ``[N, 4]`` xyxy faces in original pixels, of images ``owner`` ``[N]``.
        sizes: ``[images, 2]`` each image's ``(width, height)``.
    """
    if not len(boxes):
        return 0.0
    fitted = np.array([fitted_size(int(w), int(h), longer_side) for w, h in sizes.tolist()], dtype=np.int64)
    scale = np.tile(fitted / sizes, 2).astype(np.float32)
    inputs = np.array([padded_size(int(w), int(h)) for w, h in fitted.tolist()], dtype=np.int64)
    shown = np.zeros(len(boxes), dtype=bool)
    groups, group_of = np.unique(inputs, axis=0, return_inverse=True)  # images of one input size at once
    face_group = group_of.reshape(-1)[owner]
    for k, (width, height) in enumerate(groups.tolist()):
        mine = np.flatnonzero(face_group == k)
        shown[mine] = codec.represented(boxes[mine] * scale[owner[mine]], owner[mine], width, height)
    return float(shown.mean())


def plot_stats(stats: DatasetStats, out: str | os.PathLike, title: str = "") -> None:
    """Save a three-panel figure: faces per image, face sizes, representable share.

    The format follows the suffix of ``out``; the caller's plotting backend is
    left as it is (see :mod:`facegrid.core.figures`).
    """
    fig = new_figure((15, 4.2))
    axes = fig.subplots(1, 3)
    per_image = stats.faces_per_image
    edges = np.unique(np.geomspace(1, max(int(per_image.max(initial=0)), 1) + 1, 40).astype(int))
    axes[0].hist(per_image, bins=np.concatenate([[0], edges]) - 0.5, color="tab:blue")
    axes[0].set_xscale("symlog", linthresh=10)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("faces per image")
    axes[0].set_ylabel("images")

    sizes = stats.face_input_px[stats.face_input_px > 0]
    if len(sizes):
        bins = np.geomspace(max(sizes.min(), 0.1), sizes.max() * 1.01, 40)
        axes[1].hist(sizes, bins=bins, color="tab:orange")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"face size sqrt(w*h), pixels of the {stats.input_size}px input")
    axes[1].set_ylabel("faces")

    grids = list(stats.representable)
    shares = [100 * stats.representable[g] for g in grids]
    bars = axes[2].bar([g.replace(" @", "\n@") for g in grids], shares, color="tab:green")
    axes[2].bar_label(bars, fmt="%.1f%%")
    axes[2].set_ylim(0, 105)
    axes[2].set_ylabel("% of faces with a cell of their own")
    axes[2].set_xlabel("grid")
    fig.suptitle(title or f"{stats.images} images, {stats.faces} faces")
    fig.tight_layout()
    save_figure(fig, out, dpi=100)
