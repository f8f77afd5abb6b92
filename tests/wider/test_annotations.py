"""Reading and writing WIDER FACE annotation files (``facegrid.wider.annotations``), and the release's layout.

The real-data tests read the official files in place (see conftest.py); the
format edge cases use small synthetic files in ``tmp_path``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegrid.core.errors import AnnotationError, FacegridError
from facegrid.wider.annotations import (
    format_annotations,
    read_annotations,
    write_annotations,
)
from facegrid.wider.index import ATTRIBUTES, FaceFilter, Index
from facegrid.wider.layout import (
    annotations_file,
    ground_truth_beside,
    images_folder,
    val_ground_truth,
    val_images,
)

COLUMNS = ["x1", "y1", "w", "h", *ATTRIBUTES]
OFFICIAL_ORDER = ["x1", "y1", "w", "h", "blur", "expression", "illumination", "invalid", "occlusion", "pose"]


def reference_parse(data: bytes):
    """An independent, slow, line-by-line reading of a clean official file.

    Returns ``(paths, counts, faces)`` where ``faces`` maps the 1-based line of
    each face row to its 10 integers. Face-less images (count 0 + dummy row)
    contribute no faces.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    paths, counts, faces = [], [], {}
    i = 0
    while i < len(lines):
        paths.append(lines[i].decode())
        count = int(lines[i + 1])
        counts.append(count)
        for k in range(count):
            faces[i + 3 + k] = [int(v) for v in lines[i + 2 + k].split()]
        i += 2 + max(count, 1)
    return paths, counts, faces


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def official(split_file):
    """Each official file read once per module: ``official("train")`` -> Index."""
    cache: dict[str, Index] = {}

    def get(split: str) -> Index:
        if split not in cache:
            cache[split] = read_annotations(split_file(split))
        return cache[split]

    return get


@pytest.mark.parametrize(
    ("split", "images", "faces"),
    [
        ("train", 12_880, 159_420),
        ("val", 3_226, 39_708),
    ],
)
def test_official_counts(official, split, images, faces):
    index = official(split)
    assert len(index) == images
    assert index.num_faces == faces
    assert int(index.faces_per_image().sum()) == faces
    assert index.offsets[0] == 0 and index.offsets[-1] == faces
    assert index.boxes.shape == (faces, 4)
    assert index.attributes.shape == (faces, len(ATTRIBUTES))
    assert index.face_lines.shape == (faces,)
    assert index.name_lines.shape == (images,)


@pytest.mark.parametrize(
    ("split", "images", "faces", "present"),
    [
        ("train_sample", 1_202, 24_990, 1_404),
        ("train_1404", 1_404, 31_713, 1_404),
        ("val_sample", 394, None, 394),
    ],
)
def test_sample_split_counts(official, split, images, faces, present, wider):
    index = official(split)
    assert len(index) == images
    assert faces is None or index.num_faces == faces
    folder = wider / ("WIDER_train" if split.startswith("train") else "WIDER_val") / "images"
    # Every image a sample file names is in the data folder, which holds the 1,404 train images.
    assert all((folder / p).is_file() for p in index.paths.tolist())
    assert sum(1 for _ in folder.rglob("*.jpg")) == present


def test_sample_files_are_the_same_lines_as_the_full_files(official):
    """Every image of a *_sample file has the same faces as in the complete file."""
    for split in ("train", "val"):
        full, sample = official(split), official(f"{split}_sample")
        position = {p: i for i, p in enumerate(full.paths.tolist())}
        for j, path in enumerate(sample.paths.tolist()):
            i = position[path]
            a = slice(full.offsets[i], full.offsets[i + 1])
            b = slice(sample.offsets[j], sample.offsets[j + 1])
            np.testing.assert_array_equal(full.boxes[a], sample.boxes[b])
            np.testing.assert_array_equal(full.attributes[a], sample.attributes[b])


def test_train_quirk_count_zero_dummy_row(official, split_file):
    """4 train images: count 0 followed by an all-zero dummy row -> 0 faces + a note."""
    index = official("train")
    empty = np.flatnonzero(index.faces_per_image() == 0)
    assert len(empty) == 4
    notes = [n for n in index.notes if n.kind == "no_face_dummy_row"]
    assert len(notes) == 4
    assert len(index.notes) == 4  # nothing else about the official file is odd
    raw = split_file("train").read_bytes().split(b"\n")
    # Each note points at the dummy row, right after the "0" count of an empty image.
    assert [n.line for n in notes] == [int(index.name_lines[i]) + 2 for i in empty]
    for note, i in zip(notes, empty):
        assert raw[note.line - 1].split() == [b"0"] * 10
        assert raw[note.line - 2].strip() == b"0"
        assert raw[note.line - 3].decode() == index.paths[i]
    # The dummy row is not a face: no face row points at it.
    assert not np.isin([n.line for n in notes], index.face_lines).any()


def test_val_quirk_count_one_all_zero_row(official):
    """4 val images: count 1 with an all-zero row -> read as one zero-size face."""
    index = official("val")
    assert index.notes == ()
    assert (index.faces_per_image() == 0).sum() == 0
    all_zero = np.flatnonzero((index.boxes == 0).all(axis=1) & (index.attributes == 0).all(axis=1))
    assert len(all_zero) == 4
    image_of_face = np.searchsorted(index.offsets, all_zero, side="right") - 1
    np.testing.assert_array_equal(index.faces_per_image()[image_of_face], 1)
    # The default filter drops them, and keeps their images.
    filtered = FaceFilter().apply(index)
    assert len(filtered) == len(index)
    np.testing.assert_array_equal(filtered.faces_per_image()[image_of_face], 0)


@pytest.mark.parametrize(("split", "zero_size", "invalid"), [("train", 27, 2_399), ("val", 11, 585)])
def test_zero_size_and_invalid_rows(official, split, zero_size, invalid):
    index = official(split)
    assert int(((index.boxes[:, 2] == 0) | (index.boxes[:, 3] == 0)).sum()) == zero_size
    assert int((index.attribute("invalid") == 1).sum()) == invalid
    assert (index.boxes[:, 2:] >= 0).all()


@pytest.mark.parametrize("split", ["val", "train_sample"])
def test_every_row_matches_an_independent_reading(official, split_file, split):
    """Paths, counts, boxes and all six attributes match the raw text, column by column."""
    paths, counts, faces = reference_parse(split_file(split).read_bytes())
    index = official(split)
    assert index.paths.tolist() == paths
    np.testing.assert_array_equal(index.faces_per_image(), counts)
    assert sorted(faces) == index.face_lines.tolist()
    table = np.array([faces[line] for line in index.face_lines.tolist()])
    np.testing.assert_array_equal(index.boxes, table[:, :4])
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(index.attribute(name), table[:, OFFICIAL_ORDER.index(name)], err_msg=name)


def test_attribute_spot_checks_on_train(official, split_file):
    """For each attribute, the first row where only it is nonzero is read under its own name."""
    raw = split_file("train").read_bytes().split(b"\n")
    index = official("train")
    line_to_face = {line: k for k, line in enumerate(index.face_lines.tolist())}
    for column in range(4, 10):
        name = OFFICIAL_ORDER[column]
        for line, k in line_to_face.items():  # noqa: B007 (k, the row found, is read after the loop)
            values = [int(v) for v in raw[line - 1].split()]
            others = values[4:column] + values[column + 1 :]
            if values[column] > 0 and not any(others):
                break
        else:  # pragma: no cover - the official file has such rows for every column
            pytest.fail(f"no row with only {name} set")
        assert index.attribute(name)[k] == values[column], name
        for other in ATTRIBUTES:
            if other != name:
                assert index.attribute(other)[k] == 0, (name, other)
        np.testing.assert_array_equal(index.boxes[k], values[:4])


def test_attribute_value_ranges_of_official_train(official):
    index = official("train")
    assert sorted(np.unique(index.attribute("blur")).tolist()) == [0, 1, 2]
    assert sorted(np.unique(index.attribute("occlusion")).tolist()) == [0, 1, 2]
    for name in ("expression", "illumination", "invalid", "pose"):
        assert sorted(np.unique(index.attribute(name)).tolist()) == [0, 1], name


def test_first_val_image_known_values(official, split_file):
    index = official("val")
    first = split_file("val").read_bytes().split(b"\n")[:3]
    assert index.paths[0] == first[0].decode()
    assert index.faces_per_image()[0] == int(first[1])
    assert index.name_lines[0] == 1
    assert index.face_lines[0] == 3
    np.testing.assert_array_equal(
        np.concatenate([index.boxes[0], index.attributes[0]]), [int(v) for v in first[2].split()]
    )
    assert index.where(3) == f"{index.source}:3"


@pytest.mark.parametrize("split", ["train", "val", "train_sample", "val_sample"])
def test_writer_round_trips_official_files_byte_for_byte(official, split_file, split):
    data = split_file(split).read_bytes()
    assert format_annotations(official(split)).encode("utf-8") == data


def test_write_annotations_round_trip_through_a_file(official, tmp_path):
    index = official("val_sample")
    out = tmp_path / "out.txt"
    write_annotations(index, out)
    again = read_annotations(out)
    assert again.paths.tolist() == index.paths.tolist()
    np.testing.assert_array_equal(again.offsets, index.offsets)
    np.testing.assert_array_equal(again.boxes, index.boxes)
    np.testing.assert_array_equal(again.attributes, index.attributes)
    np.testing.assert_array_equal(again.face_lines, index.face_lines)


def test_writing_a_filtered_index_writes_empty_images_as_dummy_rows(official, tmp_path):
    index = official("val_sample")
    filtered = FaceFilter(min_size=10_000).apply(index)  # drops every face
    assert filtered.num_faces == 0 and len(filtered) == len(index)
    out = tmp_path / "empty.txt"
    write_annotations(filtered, out)
    lines = out.read_bytes().split(b"\n")
    assert lines[:3] == [index.paths[0].encode(), b"0", b"0 0 0 0 0 0 0 0 0 0 "]
    again = read_annotations(out)
    assert len(again) == len(index) and again.num_faces == 0
    assert [n.kind for n in again.notes] == ["no_face_dummy_row"] * len(index)


# --------------------------------------------------------------------------- synthetic files


ROW_A = b"10 20 30 40 0 0 0 0 0 0 "
ROW_B = b"5 6 7 8 2 1 1 0 2 1 "
ROW_C = b"100 110 12 14 1 0 0 1 1 0 "
CLEAN = b"\n".join([b"a/one.jpg", b"2", ROW_A, ROW_B, b"b/none.jpg", b"0", b"c/three.jpg", b"1", ROW_C]) + b"\n"


def write(tmp_path, data: bytes, name="gt.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_same_index(a: Index, b: Index):
    assert a.paths.tolist() == b.paths.tolist()
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.name_lines, b.name_lines)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.attributes, b.attributes)
    np.testing.assert_array_equal(a.face_lines, b.face_lines)


def test_clean_synthetic_file(tmp_path):
    index = read_annotations(write(tmp_path, CLEAN))
    assert index.paths.tolist() == ["a/one.jpg", "b/none.jpg", "c/three.jpg"]
    np.testing.assert_array_equal(index.faces_per_image(), [2, 0, 1])
    np.testing.assert_array_equal(index.name_lines, [1, 5, 7])
    np.testing.assert_array_equal(index.face_lines, [3, 4, 9])
    np.testing.assert_array_equal(index.boxes, [[10, 20, 30, 40], [5, 6, 7, 8], [100, 110, 12, 14]])
    assert index.attribute("blur").tolist() == [0, 2, 1]
    assert index.attribute("expression").tolist() == [0, 1, 0]
    assert index.attribute("illumination").tolist() == [0, 1, 0]
    assert index.attribute("invalid").tolist() == [0, 0, 1]
    assert index.attribute("occlusion").tolist() == [0, 2, 1]
    assert index.attribute("pose").tolist() == [0, 1, 0]
    assert index.notes == ()
    assert index.source == str(tmp_path / "gt.txt")
    np.testing.assert_array_equal(index.image_boxes(0), [[10, 20, 40, 60], [5, 6, 12, 14]])
    assert index.image_boxes(1).shape == (0, 4)


def test_bundled_samples_file(samples):
    index = read_annotations(samples / "faces_bbx_gt.txt")
    assert index.paths.tolist() == [
        "background/rocket.jpg",
        "portraits/astronaut.png",
        "portraits/camera.png",
        "portraits/grace_hopper.jpg",
    ]
    np.testing.assert_array_equal(index.faces_per_image(), [0, 1, 1, 1])
    assert [n.kind for n in index.notes] == ["no_face_dummy_row"]
    assert index.attribute("pose").tolist() == [0, 1, 0]  # camera.png is a near-profile
    for path in index.paths.tolist():
        assert (samples / "images" / path).is_file()
    assert format_annotations(index).encode() == (samples / "faces_bbx_gt.txt").read_bytes()


@pytest.mark.parametrize(
    ("data", "kind", "line"),
    [
        (CLEAN.replace(b"\n", b"\r\n"), "crlf_line_endings", 1),
        (b"\xef\xbb\xbf" + CLEAN, "utf8_bom", 1),
        (CLEAN + b"\n\n", "trailing_blank_lines", 10),
        (CLEAN + b"  \n\n", "trailing_blank_lines", 10),
        (CLEAN[:-1], "missing_final_newline", 9),
    ],
    ids=["crlf", "bom", "blank-tail", "whitespace-tail", "no-final-newline"],
)
def test_tolerated_quirks_give_the_clean_index_and_a_note(tmp_path, data, kind, line):
    clean = read_annotations(write(tmp_path, CLEAN, "clean.txt"))
    quirky = read_annotations(write(tmp_path, data, "quirky.txt"))
    assert_same_index(quirky, clean)
    assert [(n.kind, n.line) for n in quirky.notes] == [(kind, line)]
    assert quirky.notes[0].message


def test_several_quirks_at_once(tmp_path):
    data = b"\xef\xbb\xbf" + CLEAN.replace(b"\n", b"\r\n") + b"\r\n"
    quirky = read_annotations(write(tmp_path, data))
    assert_same_index(quirky, read_annotations(write(tmp_path, CLEAN, "clean.txt")))
    assert {n.kind for n in quirky.notes} == {"utf8_bom", "crlf_line_endings", "trailing_blank_lines"}


def test_quirky_file_still_formats_to_the_clean_layout(tmp_path):
    quirky = read_annotations(write(tmp_path, b"\xef\xbb\xbf" + CLEAN.replace(b"\n", b"\r\n")[:-2]))
    expected = CLEAN.replace(b"b/none.jpg\n0\n", b"b/none.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    assert format_annotations(quirky).encode() == expected


def lines(*parts: bytes) -> bytes:
    return b"\n".join(parts) + b"\n"


MALFORMED = {
    # name: (file content, line of the error, a word the message must contain)
    "too-many-faces": (lines(b"a.jpg", b"1", ROW_A, ROW_B, b"b.jpg", b"1", ROW_C), 4, "image path"),
    "non-number-count": (lines(b"a.jpg", b"one", ROW_A), 2, "number of faces"),
    "negative-count": (lines(b"a.jpg", b"-1", ROW_A), 2, "number of faces"),
    "missing-count-at-eof": (lines(b"a.jpg", b"1", ROW_A, b"b.jpg"), 5, "end of file"),
    "non-number-in-row": (lines(b"a.jpg", b"2", ROW_A, b"5 6 7 x 0 0 0 0 0 0 "), 4, "face row"),
    "float-in-row": (lines(b"a.jpg", b"1", b"5 6 7.5 8 0 0 0 0 0 0 "), 3, "face row"),
    "nine-columns": (lines(b"a.jpg", b"1", ROW_A, b"b.jpg", b"1", b"5 6 7 8 0 0 0 0 0 "), 6, "10 integers"),
    "eleven-columns": (lines(b"a.jpg", b"1", b"5 6 7 8 0 0 0 0 0 0 0"), 3, "10 integers"),
    "truncated": (lines(b"a.jpg", b"3", ROW_A), 4, "end of file"),
    "negative-width": (lines(b"a.jpg", b"2", ROW_A, b"5 6 -7 8 0 0 0 0 0 0 "), 4, "negative width"),
    "negative-height": (lines(b"a.jpg", b"1", ROW_A, b"b.jpg", b"1", b"5 6 7 -8 0 0 0 0 0 0 "), 6, "negative"),
    "blur-3": (lines(b"a.jpg", b"2", ROW_A, b"5 6 7 8 3 0 0 0 0 0 "), 4, "blur"),
    "pose-2": (lines(b"a.jpg", b"1", b"5 6 7 8 0 0 0 0 0 2 "), 3, "pose"),
    "occlusion-negative": (lines(b"a.jpg", b"1", b"5 6 7 8 0 0 0 0 -1 0 "), 3, "occlusion"),
    "invalid-2": (lines(b"a.jpg", b"1", b"5 6 7 8 0 0 0 2 0 0 "), 3, "invalid"),
    "count-0-then-face": (lines(b"a.jpg", b"0", ROW_A), 3, "count is 0"),
    "blank-line-inside": (lines(b"a.jpg", b"1", ROW_A, b"", b"b.jpg", b"1", ROW_C), 4, "image path"),
    "number-out-of-range": (lines(b"a.jpg", b"1", b"5 6 7 99999999999 0 0 0 0 0 0 "), 3, "out of range"),
    "path-not-utf8": (lines(b"a.jpg", b"1", ROW_A, b"b\xff.jpg", b"1", ROW_C), 4, "UTF-8"),
    "only-a-path": (b"a.jpg\n", 2, "end of file"),
    "starts-with-a-count": (lines(b"1", ROW_A), 1, "image path"),
    "starts-with-a-face-row": (lines(ROW_A, b"a.jpg", b"1", ROW_A), 1, "image path"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_raise_with_file_and_line(tmp_path, case):
    data, line, word = MALFORMED[case]
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    error = info.value
    assert isinstance(error, FacegridError)
    assert error.path == str(path)
    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: ")
    assert word in str(error)
    assert error.reason and error.reason in str(error)


def test_too_few_faces_points_at_the_line_where_a_face_row_was_expected(tmp_path):
    path = write(tmp_path, lines(b"a.jpg", b"3", ROW_A, ROW_B, b"b.jpg", b"1", ROW_C))
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    # Line 5 holds 'b.jpg' where a.jpg's third face row should be.
    assert info.value.line == 5
    assert str(info.value).startswith(f"{path}:5: ")
    assert "face row" in str(info.value) and "b.jpg" in str(info.value)


def test_too_few_faces_by_two_points_at_the_first_misplaced_line(tmp_path):
    path = write(tmp_path, lines(b"a.jpg", b"4", ROW_A, ROW_B, b"b.jpg", b"1", ROW_C, b"c.jpg", b"1", ROW_A))
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    assert info.value.line == 5
    assert str(info.value).startswith(f"{path}:5: ")


@pytest.mark.parametrize("data", [b"", b"\n\n\n", b"\xef\xbb\xbf", b"  \r\n"], ids=["empty", "blank", "bom", "space"])
def test_empty_file_raises_at_line_1(tmp_path, data):
    path = write(tmp_path, data)
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    assert info.value.line == 1
    assert str(info.value).startswith(f"{path}:1: ")
    assert "empty" in str(info.value)


def test_binary_file_raises_annotation_error(tmp_path):
    png = tmp_path / "picture.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(png)
    with pytest.raises(AnnotationError) as info:
        read_annotations(png)
    # b"\x89PNG" is taken for an image path; line 2 is binary, not a count.
    assert info.value.line == 2
    assert str(info.value).startswith(f"{png}:2: ")
    assert "number of faces" in str(info.value)


def test_random_garbage_raises_annotation_error(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(20):
        path = write(tmp_path, rng.integers(0, 256, size=2000, dtype=np.uint8).tobytes(), f"g{k}.bin")
        with pytest.raises(AnnotationError) as info:
            read_annotations(path)
        assert str(info.value).startswith(f"{path}:{info.value.line}: ")
        assert info.value.line >= 1


def test_missing_file_raises_os_error(tmp_path):
    with pytest.raises(OSError):
        read_annotations(tmp_path / "absent.txt")


def test_blank_face_rows_raise_at_the_first_without_a_warning(tmp_path, recwarn):
    path = write(tmp_path, b"a.jpg\n2\n\n\nb.jpg\n0\n")
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    assert info.value.line == 3
    assert not recwarn.list


def test_the_release_layout_names_where_the_real_data_lies(wider):
    for split in ("train", "val"):
        assert (wider / annotations_file(split)).is_file() and (wider / images_folder(split)).is_dir()
    assert val_images(wider) == wider / "WIDER_val" / "images"
    assert val_ground_truth(wider) == wider / "eval_tools" / "ground_truth"
    assert (val_ground_truth(wider) / "wider_face_val.mat").is_file()
    beside = ground_truth_beside(wider / annotations_file("val"))
    assert beside.is_absolute() and beside.samefile(val_ground_truth(wider))
