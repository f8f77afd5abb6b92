"""Read and write WIDER FACE annotation files (``wider_face_*_bbx_gt.txt``).

The format, per image::

    0--Parade/0_Parade_marchingband_1_849.jpg      path relative to the images folder
    1                                              number of faces
    449 330 122 149 0 0 0 0 0 0                    one row per face

Each face row is ``x1 y1 w h blur expression illumination invalid occlusion
pose`` (the column order of the official readme.txt; some readers swap the
last columns). The official files carry these quirks, all read as they are:

* a count of ``0`` followed by one all-zero dummy row (train): an image with
  no faces, never a face;
* a count of ``1`` with an all-zero row (val): read as one zero-size face,
  which the default :class:`~facegrid.wider.index.FaceFilter` drops;
* zero widths or heights, faces flagged invalid, a space before each newline.

Harmless deviations (CRLF line endings, a UTF-8 byte-order mark, trailing
blank lines, a missing final newline) are tolerated and recorded as
:class:`~facegrid.wider.index.Note` s. Anything else raises :class:`AnnotationError`
naming ``FILE:LINE`` and what was expected there; a wrong sample is never
produced.

The parse is vectorised: one pass over the path and count lines in Python, one
:func:`numpy.loadtxt` over all face rows.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from facegrid.core.errors import AnnotationError
from facegrid.wider.index import ATTRIBUTE_MAX, ATTRIBUTES, Index, Note

_COLUMNS = "x1 y1 w h " + " ".join(ATTRIBUTES)
_DUMMY_ROW = b"0 0 0 0 0 0 0 0 0 0"
_INTEGER = re.compile(rb"-?[0-9]+")


def _show(raw: bytes, limit: int = 60) -> str:
    text = raw.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _is_face_row(raw: bytes) -> bool:
    fields = raw.split()
    return len(fields) == len(_COLUMNS.split()) and all(_INTEGER.fullmatch(f) for f in fields)


def _split_lines(path: str, data: bytes, notes: list[Note]) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):
        notes.append(Note("utf8_bom", 1, "file starts with a UTF-8 byte-order mark"))
        data = data[3:]
    if b"\r\n" in data:
        notes.append(Note("crlf_line_endings", 1, "file uses CRLF (Windows) line endings"))
    if data and not data.endswith((b"\n", b"\r")):
        notes.append(Note("missing_final_newline", data.count(b"\n") + 1, "last line has no newline"))
    lines = data.splitlines()
    blank_tail = 0
    while lines and not lines[-1].strip():
        lines.pop()
        blank_tail += 1
    if blank_tail:
        notes.append(Note("trailing_blank_lines", len(lines) + 1, f"{blank_tail} blank line(s) at the end"))
    if not lines:
        raise AnnotationError(path, 1, "file is empty: expected an image path")
    return lines


class _Records:
    """Per-image fields gathered by :func:`_walk`, kept when it stops on an error."""

    def __init__(self):
        self.names: list[bytes] = []
        self.name_lines: list[int] = []
        self.counts: list[int] = []
        self.row_starts: list[int] = []


def _walk(path: str, lines: list[bytes], records: _Records, notes: list[Note]) -> None:
    """Follow the path and count lines, recording where each image's face rows are."""
    i, n = 0, len(lines)
    while i < n:
        name = lines[i].strip()
        if not name or (name[-1:].isdigit() and (name.isdigit() or _is_face_row(name))):
            hint = ""
            if name and _is_face_row(name) and records.names:
                hint = (
                    f" (a face row: line {records.name_lines[-1] + 1} gives {_show(records.names[-1])}"
                    f" {records.counts[-1]} face(s); is that count too small?)"
                )
            raise AnnotationError(path, i + 1, f"expected an image path, got {_show(lines[i])}{hint}")
        if i + 1 >= n:
            raise AnnotationError(path, i + 2, f"expected the number of faces of {_show(name)}, got end of file")
        count_text = lines[i + 1].strip()
        if not count_text.isdigit():
            raise AnnotationError(
                path, i + 2, f"expected the number of faces of {_show(name)}, got {_show(lines[i + 1])}"
            )
        count = int(count_text)
        rows = count
        if count == 0 and i + 2 < n and _is_face_row(lines[i + 2]):
            if lines[i + 2].split() != _DUMMY_ROW.split():
                raise AnnotationError(path, i + 3, f"count is 0 but the next row is a face: {_show(lines[i + 2])}")
            notes.append(Note("no_face_dummy_row", i + 3, "count 0 followed by an all-zero dummy row"))
            rows = 1
        if i + 2 + rows > n:
            raise AnnotationError(
                path, n + 1, f"expected {count} face row(s) for {_show(name)} (count on line {i + 2}), got end of file"
            )
        records.names.append(name)
        records.name_lines.append(i + 1)
        records.counts.append(count)
        records.row_starts.append(i + 2)
        i += 2 + rows


def _raise_first_bad_row(path: str, lines: list[bytes], records: _Records) -> None:
    """Raise for the first face row that is not 10 integers in 32-bit range, if any."""
    limit = np.iinfo(np.int32).max
    for name, name_line, count, start in zip(records.names, records.name_lines, records.counts, records.row_starts):
        for k in range(start, start + count):
            raw = lines[k]
            if not _is_face_row(raw):
                raise AnnotationError(
                    path,
                    k + 1,
                    f"expected a face row '{_COLUMNS}' (10 integers), got {_show(raw)}"
                    f" (line {name_line + 1} gives {_show(name)} {count} face(s))",
                )
            if any(abs(int(field)) > limit for field in raw.split()):
                raise AnnotationError(path, k + 1, f"number out of range (beyond ±{limit}): {_show(raw)}")


def read_annotations(path: str | os.PathLike) -> Index:
    """Parse a WIDER FACE annotation file into an :class:`~facegrid.wider.index.Index`.

    Args:
        path: a ``wider_face_*_bbx_gt.txt`` file (or any file in that format).

    Returns:
        The index, with every image and every face row in file order.

    Raises:
        AnnotationError: the file is malformed; the message names ``FILE:LINE``.
        OSError: the file cannot be read.

    Example:
        >>> index = read_annotations("wider_face_split/wider_face_val_bbx_gt.txt")  # doctest: +SKIP
        >>> len(index), index.num_faces  # doctest: +SKIP
        (3226, 39708)
    """
    path = str(path)
    notes: list[Note] = []
    lines = _split_lines(path, Path(path).read_bytes(), notes)
    records = _Records()
    try:
        _walk(path, lines, records, notes)
    except AnnotationError:
        # A wrong count earlier in the file shows up later as a misplaced line:
        # report the first face row that is not one, if there is such a row.
        _raise_first_bad_row(path, lines, records)
        raise
    names, name_lines = records.names, records.name_lines

    counts_arr = np.asarray(records.counts, dtype=np.int64)
    starts_arr = np.asarray(records.row_starts, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts_arr)])
    # 0-based line index of every face row: start of its image's rows plus its rank there.
    row_index = np.repeat(starts_arr - offsets[:-1], counts_arr) + np.arange(offsets[-1])
    table = _parse_face_rows(path, lines, records)

    _check_values(path, table, row_index)
    try:
        decoded = [name.decode("utf-8") for name in names]
    except UnicodeDecodeError:
        bad = next(k for k, name in enumerate(names) if not _decodes(name))
        raise AnnotationError(path, name_lines[bad], f"image path is not UTF-8: {_show(names[bad])}") from None
    return Index(
        source=path,
        paths=np.array(decoded, dtype=np.dtypes.StringDType()),
        name_lines=np.asarray(name_lines, dtype=np.int32),
        offsets=offsets.astype(np.int64),
        boxes=np.ascontiguousarray(table[:, :4]),
        attributes=np.ascontiguousarray(table[:, 4:], dtype=np.uint8),
        face_lines=(row_index + 1).astype(np.int32),
        notes=tuple(notes),
    )


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_face_rows(path: str, lines: list[bytes], records: _Records) -> np.ndarray:
    ncols = len(_COLUMNS.split())
    rows: list[bytes] = []
    for start, count in zip(records.row_starts, records.counts):
        rows.extend(lines[start : start + count])
    if not rows:
        return np.zeros((0, ncols), dtype=np.int32)
    try:
        with warnings.catch_warnings():  # blank rows warn; the shape test below names the first bad row
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(rows, dtype=np.int32, ndmin=2)
    except (ValueError, OverflowError):
        table = None
    if table is not None and table.shape == (len(rows), ncols):
        return table
    _raise_first_bad_row(path, lines, records)
    raise AnnotationError(path, records.row_starts[0] + 1, "could not parse the face rows")  # pragma: no cover


def _check_values(path: str, table: np.ndarray, row_index: np.ndarray) -> None:
    if not len(table):
        return
    negative = (table[:, 2:4] < 0).any(axis=1)
    if negative.any():
        k = int(np.argmax(negative))
        raise AnnotationError(path, int(row_index[k]) + 1, f"negative width or height: w={table[k, 2]} h={table[k, 3]}")
    for column, name in enumerate(ATTRIBUTES, start=4):
        bad = (table[:, column] < 0) | (table[:, column] > ATTRIBUTE_MAX[name])
        if bad.any():
            k = int(np.argmax(bad))
            legal = ", ".join(str(v) for v in range(ATTRIBUTE_MAX[name] + 1))
            raise AnnotationError(path, int(row_index[k]) + 1, f"{name} must be one of {legal}, got {table[k, column]}")


def format_annotations(index: Index) -> str:
    """The WIDER FACE text of ``index``, in the official files' exact layout.

    Each face row ends with a space before the newline, and an image without
    faces is written as a count of 0 followed by the all-zero dummy row, as the
    official train file does. Reading an official file and formatting it gives
    the file back byte for byte.
    """
    table = np.concatenate([index.boxes.astype(np.int64), index.attributes.astype(np.int64)], axis=1)
    rows = [" ".join(map(str, row)) + " \n" for row in table.tolist()]
    dummy = _DUMMY_ROW.decode() + " \n"
    out: list[str] = []
    offsets = index.offsets.tolist()
    for i, name in enumerate(index.paths.tolist()):
        start, stop = offsets[i], offsets[i + 1]
        out.append(f"{name}\n{stop - start}\n")
        out.extend(rows[start:stop] if stop > start else [dummy])
    return "".join(out)


def write_annotations(index: Index, path: str | os.PathLike) -> None:
    """Write ``index`` as a WIDER FACE annotation file (see :func:`format_annotations`)."""
    Path(path).write_text(format_annotations(index), encoding="utf-8", newline="\n")
