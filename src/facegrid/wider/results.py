"""Read and write detections in the WIDER FACE result format.

The official evaluation (``eval_tools/read_pred.m``) reads one text file per
image, ``DIR/<event>/<name>.txt``, for the image ``<event>/<name>.jpg``::

    0_Parade_marchingband_1_465        line 1: the image name
    2                                  line 2: the number of boxes
    345 211 40.5 48 0.98               one ``x y w h score`` row per box
    120.25 96 22 27 0.31               (left, top, width, height; floats allowed)

**The name line.** ``read_pred.m`` never reads line 1: it finds each file
from the ground truth's event and image name. The widely used Python port of
the tool does read it, keeps what follows the last ``/`` and strips ``.jpg``,
and files the boxes under that name; so ``<name>``, ``<name>.jpg`` and
``<event>/<name>.jpg`` all reach the right image in both tools. facegrid
writes the bare ``<name>``, as the common detector repositories do, and reads
any of these forms. The key of a file is taken from where it lies, as
``read_pred.m`` does; a name line that names another image is logged as a
warning rather than rejected, since the official tool accepts it.

**Order.** :func:`write_image_result` writes the rows by score, highest first.
``read_pred.m`` sorts each file itself before matching, but the Python port
does not and mis-scores unsorted files; sorted files score the same in both.
:func:`read_submission` returns rows in file order.

Anything else that is not the format raises :class:`SubmissionError` naming
``FILE:LINE``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from facegrid.core.boxes import checked_detections
from facegrid.core.errors import PathError, SubmissionError
from facegrid.core.files import write_atomically
from facegrid.core.suffixes import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: Lowest score a submission keeps: every box down to 0.01, the convention
#: of WIDER FACE results, so that the PR curve reaches as far as it can. It is
#: a floor on the network's raw scores, before a model's score calibration.
SCORE_FLOOR = 0.01


_COUNT = re.compile(r"[0-9]+")


def image_key(image_path: str) -> str:
    """The key of an image: its ``/``-separated path without an image suffix.

    Results and ground truth are matched on this key, so that
    ``"0--Parade/x.jpg"`` (annotation files) and ``"0--Parade/x"`` (the
    official ``.mat`` ground truth, result folders) name the same image.

    Example:
        >>> image_key("0--Parade/0_Parade_marchingband_1_465.jpg")
        '0--Parade/0_Parade_marchingband_1_465'
    """
    path = PurePosixPath(image_path)
    return str(path.with_suffix("")) if path.suffix.lower() in IMAGE_SUFFIXES else str(path)


def _format_number(value: np.float32) -> str:
    # The shortest text that reads back as the same float32.
    return np.format_float_positional(value, unique=True, trim="-")


def format_image_result(image_path: str, boxes_xyxy: np.ndarray, scores: np.ndarray) -> tuple[PurePosixPath, str]:
    """One image's result file: its key ``<event>/<name>`` and its text (see :func:`write_image_result`).

    Raises:
        ValueError: as :func:`write_image_result`.
    """
    key = PurePosixPath(image_key(image_path))
    if len(key.parts) != 2 or key.is_absolute() or ".." in key.parts:
        raise ValueError(f"image path must look like '<event>/<name>.jpg', got {image_path!r}")
    boxes, scores = checked_detections(image_path, boxes_xyxy, scores)
    scores = scores.astype(np.float32)
    sides = boxes[:, 2:] - boxes[:, :2]
    rows = np.concatenate([boxes[:, :2], sides, scores[:, None]], axis=1)
    rows = rows[np.argsort(-scores, kind="stable")]
    lines = [key.name, str(len(rows))]
    lines.extend(" ".join(_format_number(v) for v in row) for row in rows)
    return key, "\n".join(lines) + "\n"


def write_image_result(root: str | os.PathLike, image_path: str, boxes_xyxy: np.ndarray, scores: np.ndarray) -> Path:
    """Write one image's detections as ``root/<event>/<name>.txt``.

    Args:
        root: the submission folder (created if needed).
        image_path: the image as ``"<event>/<name>.jpg"`` (the suffix may be left out).
        boxes_xyxy: ``[K, 4]`` boxes ``x1, y1, x2, y2`` in original-image pixels.
        scores: ``[K]`` confidences; any real numbers (the evaluation rescales them).

    Returns:
        The path of the file written (an existing file is replaced).

    Raises:
        ValueError: ``image_path`` is not ``<event>/<name>``, the shapes disagree,
            a value is not finite, or a box has ``x2 < x1`` or ``y2 < y1``.

    Example:
        >>> write_image_result("pred", "0--Parade/0_Parade_marchingband_1_465.jpg",
        ...                    np.array([[10, 20, 50, 70]]), np.array([0.9]))  # doctest: +SKIP
        PosixPath('pred/0--Parade/0_Parade_marchingband_1_465.txt')
    """
    key, text = format_image_result(image_path, boxes_xyxy, scores)
    out = result_path(root, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))
    return out


def result_path(root: str | os.PathLike, key: str | PurePosixPath) -> Path:
    """Where the result file of the image ``key`` (``<event>/<name>``) lies in the submission folder ``root``."""
    key = PurePosixPath(key)
    return Path(root) / key.parent / f"{key.name}.txt"


def as_submitted(image_path: str, boxes_xyxy: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections exactly as its result file holds them once written and read back.

    The text keeps each number's float32 value, but boxes are written as
    ``x y w h`` and read back as ``x1 = x, x2 = x + w``, which can move a
    corner by a rounding step; scoring these instead of the detector's own
    boxes makes an evaluation in memory equal to one of the written files.
    Rows come highest score first, as in the file.

    Raises:
        ValueError: as :func:`write_image_result`.
    """
    key, text = format_image_result(image_path, boxes_xyxy, scores)
    return _parse(Path(f"{key}.txt"), text)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SubmissionError(path, line, "not UTF-8 text") from None


def _check_name_line(path: Path, line: str) -> None:
    name = line.strip()
    if PurePosixPath(image_key(name)).name != path.stem:
        log.warning(
            "%s:1: the name line %r does not name this file's image %r; the official tool ignores "
            "the line, but the common Python port files these boxes under that name",
            path,
            name,
            path.stem,
        )


def _are_numbers(fields: list[str]) -> bool:
    try:
        np.array(fields, dtype=np.float64)
    except ValueError:
        return False
    return True


def _parse_rows(path: Path, rows: list[str]) -> np.ndarray:
    fields = [row.split() for row in rows]
    for k, row in enumerate(fields):
        if len(row) != 5:
            raise SubmissionError(path, k + 3, f"expected 'x y w h score' (5 numbers), got {rows[k]!r}")
    try:
        table = np.array(fields, dtype=np.float64).reshape(-1, 5)
    except ValueError:
        k = next(k for k, row in enumerate(fields) if not _are_numbers(row))
        raise SubmissionError(path, k + 3, f"expected 'x y w h score' (5 numbers), got {rows[k]!r}") from None
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise SubmissionError(path, k + 3, f"numbers must be finite, got {rows[k]!r}")
    negative = (table[:, 2:4] < 0).any(axis=1)
    if negative.any():
        k = int(np.argmax(negative))
        raise SubmissionError(path, k + 3, f"negative width or height: {rows[k]!r}")
    return table


def read_image_result(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one result file.

    Args:
        path: a ``<name>.txt`` result file.

    Returns:
        ``(boxes, scores)``: float32 ``[K, 4]`` xyxy boxes and float32 ``[K]``
        scores, in file order.

    Raises:
        SubmissionError: the file is malformed; the message names ``FILE:LINE``.
        OSError: the file cannot be read.
    """
    path = Path(path)
    return _parse(path, _decode(path, path.read_bytes()))


def _parse(path: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    """The boxes and scores of a result file's text; errors name ``path``."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SubmissionError(path, 1, "file is empty: expected the image name")
    _check_name_line(path, lines[0])
    if len(lines) < 2:
        raise SubmissionError(path, 2, "expected the number of boxes, got end of file")
    count_text = lines[1].strip()
    if not _COUNT.fullmatch(count_text):
        raise SubmissionError(path, 2, f"expected the number of boxes, got {lines[1]!r}")
    count = int(count_text)
    rows = lines[2:]
    if len(rows) < count:
        raise SubmissionError(
            path, len(lines) + 1, f"expected {count} box row(s) (count on line 2), got end of file after {len(rows)}"
        )
    if len(rows) > count:
        raise SubmissionError(path, count + 3, f"line 2 gives {count} box(es) but another row follows: {rows[count]!r}")
    table = _parse_rows(path, rows)
    boxes = np.concatenate([table[:, :2], table[:, :2] + table[:, 2:4]], axis=1).astype(np.float32)
    return boxes, table[:, 4].astype(np.float32)


def read_submission(root: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read every ``root/<event>/<name>.txt`` result file of a submission.

    Files elsewhere (``root/x.txt``, deeper folders) are not part of the
    format and are not read, as in the official tool.

    Args:
        root: the submission folder.

    Returns:
        ``{"<event>/<name>": (boxes, scores)}`` with float32 ``[K, 4]`` xyxy
        boxes and float32 ``[K]`` scores in file order, keys sorted.

    Raises:
        SubmissionError: a result file is malformed; the message names ``FILE:LINE``.
        NotADirectoryError: ``root`` is not a folder.
        facegrid.core.errors.PathError: ``root`` holds no result files, so that an
            empty or wrong folder is never scored as a submission without faces.

    Example:
        >>> boxes, scores = read_submission("pred")["0--Parade/0_Parade_marchingband_1_465"]  # doctest: +SKIP
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"submission folder not found: {root}")
    result = {f"{path.parent.name}/{path.stem}": read_image_result(path) for path in sorted(root.glob("*/*.txt"))}
    if not result:
        raise PathError(root, "holds no result files (<event>/<name>.txt)")
    return result
