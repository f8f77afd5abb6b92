"""The codecs: the one place that knows the detector's target layouts.

Two layouts exist. :class:`GridCodec` is a single ``G x G`` grid, one face per
cell (facegrid's first layout, and the pipelines' default). :class:`PyramidCodec`
is a pyramid of grids at several strides, where each face goes to the level
of its size and is held by several cells (its docstring has its channel table
and assignment rules): what the bundled detector uses. Both encode a batch at
once, decode predictions the way they encode targets, and say which faces
they can represent (``assign``).

In a single grid, the image is divided into a ``G x G`` grid. A face belongs to the cell that
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

import functools
from dataclasses import dataclass

import numpy as np

from facegrid.core import boxes as box_ops

#: Channel names of a grid cell, in order.
CHANNELS = ("objectness", "x", "y", "w", "h")


class _Encoder:
    """What both codecs share: one image's target is a batch of one."""

    def encode(self, boxes: np.ndarray, width: float, height: float, ignore: np.ndarray | None = None) -> np.ndarray:
        """The float32 target for the faces of one image (``[G, G, 5]`` or ``[N, 5]``): :meth:`encode_batch` of one.

        Args:
            boxes: ``[F, 4]`` xyxy boxes in pixels of an image of ``width x height``;
                ``F`` may be 0 (an all-background target).
            width, height: the image size in pixels.
            ignore: ``[M, 4]`` xyxy regions that are neither face nor background
                (faces left out of training); cells whose centre they cover get -1.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        ignore = np.zeros((0, 4), np.float32) if ignore is None else np.asarray(ignore, np.float32).reshape(-1, 4)
        image_0 = np.zeros(len(boxes), np.int64)
        return self.encode_batch(boxes, image_0, 1, width, height, ignore, np.zeros(len(ignore), np.int64))[0]


@dataclass(frozen=True)
class GridCodec(_Encoder):
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

    def target_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """Shape of one target for an input of any size: ``(G, G, 5)`` (the grid does not depend on it)."""
        return self.shape

    def cell_centres(self, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``[G]`` x centres of the columns and ``[G]`` y centres of the rows, in pixels of the image.

        A cell whose centre lies strictly inside a face it does not hold (or an
        ignore region) is an ignore cell; every encoder tests those centres.
        """
        steps = (np.arange(self.grid_size, dtype=np.float32) + 0.5) / self.grid_size
        return steps * width, steps * height

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
        target = np.zeros((count, *self.shape), dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        owners = np.asarray(owners, dtype=np.int64).reshape(-1)
        regions, region_owners = boxes, owners
        if ignore is not None and len(ignore):
            regions = np.concatenate([boxes, np.asarray(ignore, np.float32).reshape(-1, 4)])
            region_owners = np.concatenate([owners, np.asarray(ignore_owners, np.int64).reshape(-1)])
        if len(regions):
            cx, cy = self.cell_centres(width, height)
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


#: Channel names of a pyramid cell, in order (see :class:`PyramidCodec`).
PYRAMID_CHANNELS = ("score", "dx", "dy", "w", "h")

#: A network predicts a cell's size as its logarithm (in strides), clipped to this magnitude before ``exp``.
SIZE_LOG_LIMIT = 8.0


@dataclass(frozen=True)
class PyramidCodec(_Encoder):
    """Encode boxes into targets on a pyramid of grids, and decode predictions back to boxes.

    An ``H x W`` input has one grid per stride ``s`` in ``strides``, of
    ``ceil(H / s) x ceil(W / s)`` cells. A target or prediction is those grids'
    cells flattened into one ``[N, 5]`` array: level by level (finest first),
    each row-major, so the layout follows from the input size alone
    (:meth:`cells_for`). Each cell has five channels:

    ====  ======  =============================================================
     ch    name    meaning
    ====  ======  =============================================================
     0     score   1 if the cell is a positive location of a face; -1 "ignore" if
                   its centre lies inside an ignore region (a face left out of
                   training); else 0. Predictions give the expected IoU of the
                   cell's box with the face (a quality-aware score)
     1     dx      box centre x minus the cell centre x, in strides
     2     dy      box centre y minus the cell centre y, in strides
     3     w       box width, in strides
     4     h       box height, in strides
    ====  ======  =============================================================

    Assignment rules, in input pixels, after clipping each face to the input:

    1. Level: a face of size ``sqrt(w * h)`` goes to the level whose stride
       is nearest to ``size / faces_per_stride`` on a log scale (the finest
       level below, the coarsest above). With the defaults a level ``s``
       takes faces from ``2.83 s`` to ``5.66 s`` pixels: below 45 px on
       stride 8, 45-91 px on 16, above 91 px on 32.
    2. Cells: the cell holding the face's centre, and every cell of that
       level whose centre lies inside the face and within ``radius`` strides
       (Chebyshev distance) of its centre.
    3. A cell claimed by several faces goes to the smallest of them.

    :meth:`assign` says which faces have at least one cell; encoding then
    decoding returns exactly those boxes (clipped), once per cell.

    Args:
        strides: input pixels per cell of each level, finest first.
        faces_per_stride: the face size, in strides, that a level is centred on.
        radius: how far from a face's centre (in strides) cells are positives.

    Example:
        >>> codec = PyramidCodec()
        >>> target = codec.encode(np.array([[10, 20, 50, 80]]), width=160, height=128)
        >>> target.shape  # 20 x 16 + 10 x 8 + 5 x 4 cells
        (420, 5)
        >>> boxes, scores = codec.decode(target, width=160, height=128)
        >>> np.round(boxes[0]).tolist(), len(boxes)
        ([10.0, 20.0, 50.0, 80.0], 5)
    """

    strides: tuple[int, ...] = (8, 16, 32)
    faces_per_stride: float = 4.0
    radius: float = 1.5

    def __post_init__(self):
        strides = tuple(int(s) for s in self.strides)
        if not strides or any(s < 1 for s in strides) or list(strides) != sorted(set(strides)):
            raise ValueError(f"strides must be increasing positive integers. Received: strides={self.strides}")
        if self.faces_per_stride <= 0 or self.radius < 0:
            raise ValueError(
                f"faces_per_stride must be > 0 and radius >= 0. "
                f"Received: faces_per_stride={self.faces_per_stride}, radius={self.radius}"
            )
        object.__setattr__(self, "strides", strides)

    def level_shapes(self, width: int, height: int) -> list[tuple[int, int]]:
        """``(rows, columns)`` of each level's grid for a ``width x height`` input."""
        return _level_shapes(self.strides, int(width), int(height))

    def cells_for(self, width: int, height: int) -> int:
        """``N``, the number of cells of a ``width x height`` input over all levels."""
        return sum(rows * cols for rows, cols in self.level_shapes(width, height))

    def target_shape(self, width: int, height: int) -> tuple[int, int]:
        """Shape of one target for a ``width x height`` input: ``(N, 5)``."""
        return (self.cells_for(width, height), len(PYRAMID_CHANNELS))

    def cell_table(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cell of a ``width x height`` input: centre ``[N, 2]`` (x, y) in pixels, stride ``[N]`` and level ``[N]``.

        The arrays are shared between calls (read-only): every image of one size has the same cells.
        """
        return _cell_table(self.strides, int(width), int(height))

    def level_of(self, boxes: np.ndarray) -> np.ndarray:
        """The level (index into ``strides``) each ``[N, 4]`` xyxy box is assigned to (rule 1)."""
        sides = np.maximum(np.asarray(boxes, np.float32).reshape(-1, 4)[:, 2:] - boxes[:, :2], 1e-6)
        size = np.sqrt(sides[:, 0] * sides[:, 1]) / self.faces_per_stride
        logs = np.log2(np.asarray(self.strides, np.float32))
        return np.abs(np.log2(size)[:, None] - logs[None, :]).argmin(axis=1)

    def _positives(self, boxes: np.ndarray, owners: np.ndarray, width: int, height: int):
        """``(cell, face)`` pairs after rules 1-3, for faces of images of one ``width x height`` input size.

        Cells are numbered per image (``owner * N + cell``); returns the pair
        arrays and the clipped boxes.
        """
        clipped = box_ops.clip(boxes, width, height)
        visible = np.flatnonzero(box_ops.area(clipped) > 0)
        empty = np.zeros(0, np.int64)
        if not len(visible):
            return empty, empty, clipped
        count = self.cells_for(width, height)
        shapes = self.level_shapes(width, height)
        starts = np.cumsum([0] + [r * c for r, c in shapes])
        levels = self.level_of(clipped[visible])
        pairs_cell, pairs_face = [], []
        reach = int(np.ceil(self.radius))
        centre = box_ops.centers(clipped[visible])
        for level, (stride, (rows, cols)) in enumerate(zip(self.strides, shapes)):
            mine = np.flatnonzero(levels == level)
            if not len(mine):
                continue
            faces = visible[mine]
            home = np.minimum(np.floor(centre[mine] / stride), [cols - 1, rows - 1]).astype(np.int64)
            offsets = np.arange(-reach, reach + 1)
            dx, dy = np.meshgrid(offsets, offsets)
            col = home[:, 0:1] + dx.ravel()[None, :]  # [F, K]
            row = home[:, 1:2] + dy.ravel()[None, :]
            cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
            box = clipped[faces]
            inside = (
                (cx > box[:, 0:1])
                & (cx < box[:, 2:3])
                & (cy > box[:, 1:2])
                & (cy < box[:, 3:4])
                & (np.abs(cx - centre[mine, 0:1]) <= self.radius * stride)
                & (np.abs(cy - centre[mine, 1:2]) <= self.radius * stride)
            )
            chosen = inside | ((dx.ravel() == 0) & (dy.ravel() == 0))[None, :]
            chosen &= (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
            face_k, slot = np.nonzero(chosen)
            cell = starts[level] + row[face_k, slot] * cols + col[face_k, slot]
            pairs_cell.append(owners[faces[face_k]] * count + cell)
            pairs_face.append(faces[face_k])
        if not pairs_cell:
            return empty, empty, clipped
        cell, face = np.concatenate(pairs_cell), np.concatenate(pairs_face)
        order = np.lexsort((-box_ops.area(clipped)[face], cell))  # by cell, then largest first
        last_of_cell = np.append(cell[order][1:] != cell[order][:-1], True)  # the smallest face of each cell
        return cell[order[last_of_cell]], face[order[last_of_cell]], clipped

    def assign(self, boxes: np.ndarray, width: float, height: float) -> np.ndarray:
        """Indices of the faces the pyramid represents (at least one positive cell), ascending.

        Args:
            boxes: ``[N, 4]`` xyxy boxes in pixels of a ``width x height`` input.
            width, height: the input size in pixels.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        return np.flatnonzero(self.represented(boxes, np.zeros(len(boxes), np.int64), width, height))

    def represented(self, boxes: np.ndarray, owners: np.ndarray, width: float, height: float) -> np.ndarray:
        """``[N]`` bool: which faces of several inputs of one size (``owners`` says whose) get a cell."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        _, face, _ = self._positives(boxes, np.asarray(owners, np.int64), int(round(width)), int(round(height)))
        mask = np.zeros(len(boxes), dtype=bool)
        mask[face] = True
        return mask

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
        """``[count, N, 5]`` targets of ``count`` inputs of one size (as :meth:`GridCodec.encode_batch`)."""
        width, height = int(round(width)), int(round(height))
        centres, strides, _ = self.cell_table(width, height)
        count_cells = len(centres)
        target = np.zeros((count, count_cells, len(PYRAMID_CHANNELS)), dtype=np.float32)
        flat = target.reshape(-1, len(PYRAMID_CHANNELS))
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        owners = np.asarray(owners, dtype=np.int64).reshape(-1)
        if ignore is not None and len(ignore):
            regions = np.asarray(ignore, np.float32).reshape(-1, 4)
            region_owners = np.asarray(ignore_owners, np.int64).reshape(-1)
            inside = (
                (centres[None, :, 0] > regions[:, 0:1])
                & (centres[None, :, 0] < regions[:, 2:3])
                & (centres[None, :, 1] > regions[:, 1:2])
                & (centres[None, :, 1] < regions[:, 3:4])
            )
            region, cell = np.nonzero(inside)
            flat[region_owners[region] * count_cells + cell, 0] = -1.0
        cell, face, clipped = self._positives(boxes, owners, width, height)
        if not len(cell):
            return target
        local = cell % count_cells
        stride = strides[local][:, None]
        box = clipped[face]
        flat[cell, 0] = 1.0
        flat[cell, 1:3] = (box_ops.centers(box) - centres[local]) / stride
        flat[cell, 3:5] = (box[:, 2:] - box[:, :2]) / stride
        return target

    @staticmethod
    def corners(cells):
        """``(top-left, bottom-right)`` ``[..., 2]`` of each cell's box, in strides from the cell centre.

        Works on NumPy arrays and on Keras tensors alike: the loss compares
        boxes through this, and decoding scales it by each cell's stride.
        """
        half = cells[..., 3:5] / 2.0
        return cells[..., 1:3] - half, cells[..., 1:3] + half

    def decode(
        self, cells: np.ndarray, width: float, height: float, threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores from one ``[N, 5]`` target or prediction of a ``width x height`` input.

        Returns:
            ``(boxes, scores)``: float32 ``[K, 4]`` xyxy boxes in input pixels
            and ``[K]`` scores, highest first. No suppression is applied.
        """
        cells = np.asarray(cells, dtype=np.float32)
        width, height = int(round(width)), int(round(height))
        if cells.shape != self.target_shape(width, height):
            raise ValueError(
                f"expected cells of shape {self.target_shape(width, height)} for a {width}x{height} input, "
                f"got {cells.shape}"
            )
        chosen = np.flatnonzero(cells[:, 0] >= threshold)
        chosen = chosen[np.argsort(-cells[chosen, 0], kind="stable")]
        centres, strides, _ = self.cell_table(width, height)
        stride = strides[chosen][:, None]
        top_left, bottom_right = self.corners(cells[chosen])
        boxes = np.concatenate([centres[chosen] + top_left * stride, centres[chosen] + bottom_right * stride], axis=1)
        return boxes.astype(np.float32), cells[chosen, 0].copy()


def _level_shapes(strides: tuple[int, ...], width: int, height: int) -> list[tuple[int, int]]:
    return [(-(-height // stride), -(-width // stride)) for stride in strides]


@functools.lru_cache(maxsize=64)
def _cell_table(strides: tuple[int, ...], width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres, cell_strides, levels = [], [], []
    for level, (stride, (rows, cols)) in enumerate(zip(strides, _level_shapes(strides, width, height))):
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres.append((np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride)
        cell_strides.append(np.full(rows * cols, stride))
        levels.append(np.full(rows * cols, level))
    table = (
        np.concatenate(centres).astype(np.float32),
        np.concatenate(cell_strides).astype(np.float32),
        np.concatenate(levels).astype(np.int64),
    )
    for array in table:
        array.flags.writeable = False
    return table


def codec_for(strides: tuple[int, ...], grid_size: int) -> GridCodec | PyramidCodec:
    """The codec of a model: a :class:`PyramidCodec` over ``strides``, or, with none, a ``G x G`` :class:`GridCodec`."""
    return PyramidCodec(tuple(strides)) if strides else GridCodec(grid_size)


def describe_layout(strides: tuple[int, ...]) -> str:
    """The target layout of a model in words: ``a pyramid of strides [8, 16, 32]``, or ``a single grid``."""
    return f"a pyramid of strides {list(strides)}" if strides else "a single grid"
