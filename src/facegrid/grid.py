"""GridCodec: the one place that knows the detector's target layout.

The image is divided into a ``G x G`` grid. A face belongs to the cell that
holds its box centre. Each cell has five channels, in this order:

====  ===========  ==========================================================
 ch    name         meaning
====  ===========  ==========================================================
 0     objectness   1 if the cell holds a face; -1 "ignore" if its centre lies inside a
                   face it does not hold (or an ignore region); else 0
 1     x            box centre x within the cell, 0 (left edge) .. 1 (right edge)
 2     y            box centre y within the cell, 0 (top edge) .. 1 (bottom edge)
 3     w            box width as a fraction of the image width
 4     h            box height as a fraction of the image height
====  ===========  ==========================================================

Channels 1-4 of a cell without a face are 0. Ignore cells keep a loss from
punishing a cell for seeing a face that belongs to a neighbouring cell, or a
face left out of training (flagged invalid, too small); predictions never
contain -1, and decoding treats it as background. Coordinates are fractions of the
image, so the same target describes the original image and its resized
network input alike; :meth:`GridCodec.decode` turns a grid back into boxes in
pixels of whatever image size it is given.

A cell holds one face. When several face centres fall into one cell, the
largest face (by clipped area) is kept and the others are not represented;
:meth:`GridCodec.assign` says which faces a grid represents, so their share can
be reported (``facegrid data stats``). Encoding then decoding returns the
represented boxes, clipped to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegrid import boxes as box_ops

#: Channel names of a grid cell, in order.
CHANNELS = ("objectness", "x", "y", "w", "h")


@dataclass(frozen=True)
class GridCodec:
    """Encode boxes into ``[G, G, 5]`` targets and decode predictions back to boxes.

    Args:
        grid_size: ``G``, cells per side.

    Example:
        >>> codec = GridCodec(7)
        >>> target = codec.encode(np.array([[10, 20, 50, 80]]), width=224, height=224)
        >>> boxes, scores = codec.decode(target, width=224, height=224)
        >>> np.round(boxes).tolist(), scores.tolist()
        ([[10.0, 20.0, 50.0, 80.0]], [1.0])
    """

    grid_size: int = 7

    def __post_init__(self):
        if self.grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {self.grid_size}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one target: ``(G, G, 5)``."""
        return (self.grid_size, self.grid_size, len(CHANNELS))

    def _cells(self, boxes: np.ndarray, width, height):
        boxes = box_ops.clip(boxes, width, height)
        if np.ndim(width) == 0 and np.ndim(height) == 0:
            size = np.array([width, height], dtype=np.float32)
        else:
            size = np.stack(np.broadcast_arrays(np.asarray(width), np.asarray(height)), axis=-1).astype(np.float32)
        scaled = box_ops.centers(boxes) / size * self.grid_size
        cells = np.minimum(np.floor(scaled), self.grid_size - 1).astype(np.int64)
        return boxes, scaled, cells

    def cells(self, boxes: np.ndarray, width, height) -> tuple[np.ndarray, np.ndarray]:
        """The cell of each face and whether it can be represented at all.

        Args:
            boxes: ``[N, 4]`` xyxy boxes in pixels.
            width, height: image size in pixels; scalars, or ``[N]`` arrays
                when the boxes come from different images.

        Returns:
            ``(cells, visible)``: int64 ``[N, 2]`` (column, row) of each box
            centre after clipping to the image, and ``[N]`` bool, false for
            boxes with no area inside the image.
        """
        clipped, _, cells = self._cells(boxes, width, height)
        return cells, box_ops.area(clipped) > 0

    def assign(self, boxes: np.ndarray, width: float, height: float) -> np.ndarray:
        """Indices of the faces the grid represents, one per occupied cell.

        Args:
            boxes: ``[N, 4]`` xyxy boxes in pixels of an image of ``width x height``.
            width, height: the image size in pixels.

        Returns:
            int64 indices into ``boxes``, ordered by cell (row-major). Faces with
            no area inside the image are never represented.
        """
        clipped, _, cells = self._cells(boxes, width, height)
        return self._one_per_cell(clipped, cells)

    def _one_per_cell(self, clipped: np.ndarray, cells: np.ndarray, owners: np.ndarray | None = None) -> np.ndarray:
        areas = box_ops.area(clipped)
        candidates = np.flatnonzero(areas > 0)
        if not len(candidates):
            return candidates
        cell_id = cells[candidates, 1] * self.grid_size + cells[candidates, 0]
        if owners is not None:  # cells of different images are different cells
            cell_id = cell_id + owners[candidates] * self.grid_size**2
        order = np.lexsort((areas[candidates], cell_id))  # by cell, then by area
        last_of_cell = np.append(cell_id[order][1:] != cell_id[order][:-1], True)
        return candidates[order[last_of_cell]]

    def encode(
        self, boxes: np.ndarray, width: float, height: float, ignore: np.ndarray | None = None
    ) -> np.ndarray:
        """The ``[G, G, 5]`` float32 target for the faces of one image.

        Args:
            boxes: ``[N, 4]`` xyxy boxes in pixels of an image of ``width x height``;
                ``N`` may be 0 (an all-background target).
            width, height: the image size in pixels.
            ignore: ``[M, 4]`` xyxy regions that are neither face nor background
                (faces left out of training); cells whose centre they cover get -1.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        ignore = np.zeros((0, 4), np.float32) if ignore is None else np.asarray(ignore, np.float32).reshape(-1, 4)
        image_0 = np.zeros(len(boxes), np.int64)
        return self.encode_batch(boxes, image_0, 1, width, height, ignore, np.zeros(len(ignore), np.int64))[0]

    def encode_batch(
        self,
        boxes: np.ndarray,
        owners: np.ndarray,
        count: int,
        width: float,
        height: float,
        ignore: np.ndarray | None = None,
        ignore_owners: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[count, G, G, 5]`` targets for the faces of ``count`` images of one size at once.

        The same targets as :meth:`encode` image by image, for a fraction of
        the cost: a batch's faces go through each step together.

        Args:
            boxes: ``[N, 4]`` xyxy boxes in pixels, the faces of all images.
            owners: ``[N]`` the image (``0 .. count - 1``) each box belongs to.
            count: number of images.
            width, height: the size in pixels of every image.
            ignore, ignore_owners: ``[M, 4]`` ignore regions and their images.
        """
        grid = self.grid_size
        target = np.zeros((count, *self.shape), dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        owners = np.asarray(owners, dtype=np.int64).reshape(-1)
        regions, region_owners = boxes, owners
        if ignore is not None and len(ignore):
            regions = np.concatenate([boxes, np.asarray(ignore, np.float32).reshape(-1, 4)])
            region_owners = np.concatenate([owners, np.asarray(ignore_owners, np.int64).reshape(-1)])
        if len(regions):
            steps = (np.arange(grid, dtype=np.float32) + 0.5) / grid
            cx, cy = steps * width, steps * height
            inside_x = (cx[None, :] > regions[:, 0:1]) & (cx[None, :] < regions[:, 2:3])  # [R, G]
            inside_y = (cy[None, :] > regions[:, 1:2]) & (cy[None, :] < regions[:, 3:4])
            region, row, col = np.nonzero(inside_y[:, :, None] & inside_x[:, None, :])  # cell centres covered
            target[region_owners[region], row, col, 0] = -1.0
        clipped, scaled, cells = self._cells(boxes, width, height)
        keep = self._one_per_cell(clipped, cells, owners)
        if not len(keep):
            return target
        clipped, scaled, cells, images = clipped[keep], scaled[keep], cells[keep], owners[keep]
        cols, rows = cells[:, 0], cells[:, 1]
        target[images, rows, cols, 0] = 1.0
        target[images, rows, cols, 1:3] = scaled - cells
        sides = clipped[:, 2:] - clipped[:, :2]
        target[images, rows, cols, 3:5] = sides / np.array([width, height], dtype=np.float32)
        return target

    def decode(
        self, grid: np.ndarray, width: float, height: float, threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores from one ``[G, G, 5]`` target or prediction.

        Args:
            grid: ``[G, G, 5]`` array laid out as described in this module.
            width, height: size in pixels of the image the boxes should refer to.
            threshold: keep cells whose objectness is at least this.

        Returns:
            ``(boxes, scores)``: float32 ``[K, 4]`` xyxy pixel boxes and ``[K]``
            objectness scores, highest score first. No suppression is applied.
        """
        grid = np.asarray(grid, dtype=np.float32)
        if grid.shape != self.shape:
            raise ValueError(f"expected a grid of shape {self.shape}, got {grid.shape}")
        rows, cols = np.nonzero(grid[..., 0] >= threshold)
        cells = grid[rows, cols]
        order = np.argsort(-cells[:, 0], kind="stable")
        cells, rows, cols = cells[order], rows[order], cols[order]
        size = np.array([width, height], dtype=np.float32)
        centre = (np.stack([cols, rows], axis=1) + cells[:, 1:3]) / self.grid_size * size
        half = cells[:, 3:5] * size / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
        return boxes, cells[:, 0].copy()
