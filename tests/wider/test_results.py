"""Results in the WIDER FACE submission format (``facegrid.wider.results``)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from facegrid.core.errors import FacegridError, PathError
from facegrid.wider.results import (
    SubmissionError,
    image_key,
    read_image_result,
    read_submission,
    write_image_result,
)

IMAGE = "0--Parade/0_Parade_marchingband_1_465.jpg"
KEY = "0--Parade/0_Parade_marchingband_1_465"


def write_raw(tmp_path, text: str, name: str = "0_Parade_marchingband_1_465"):
    path = tmp_path / "0--Parade" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_image_key():
    assert image_key(IMAGE) == KEY
    assert image_key(KEY) == KEY
    assert image_key("a/b.JPEG") == "a/b"
    assert image_key("a/b.c") == "a/b.c"  # not an image suffix: kept


def test_write_file_layout_and_order(tmp_path):
    boxes = np.array([[10, 20, 50, 70], [1.5, 2.25, 11.5, 22.25], [5, 5, 5, 9]], np.float32)
    scores = np.array([0.25, 0.9, 0.5], np.float32)
    path = write_image_result(tmp_path, IMAGE, boxes, scores)
    assert path == tmp_path / "0--Parade" / "0_Parade_marchingband_1_465.txt"
    # name line is the bare image name; rows are x y w h score, highest score first
    assert path.read_text() == ("0_Parade_marchingband_1_465\n3\n1.5 2.25 10 20 0.9\n5 5 0 4 0.5\n10 20 40 50 0.25\n")


def test_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1000, (50, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(0, 200, (50, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(-3, 3, 50).astype(np.float32)
    write_image_result(tmp_path, IMAGE, boxes, scores)
    write_image_result(tmp_path, "12--Group/12_Group_Group_12_Group_Group_12_10", boxes[:0], scores[:0])
    result = read_submission(tmp_path)
    assert sorted(result) == ["0--Parade/0_Parade_marchingband_1_465", "12--Group/12_Group_Group_12_Group_Group_12_10"]
    got_boxes, got_scores = result[KEY]
    assert got_boxes.dtype == np.float32 and got_scores.dtype == np.float32
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_array_equal(got_scores, scores[order])  # scores come back bit for bit
    np.testing.assert_allclose(got_boxes, boxes[order], atol=1e-3)  # x2 = x + w in float32
    empty_boxes, empty_scores = result["12--Group/12_Group_Group_12_Group_Group_12_10"]
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_write_replaces_existing_file(tmp_path):
    write_image_result(tmp_path, IMAGE, np.array([[0, 0, 1, 1]]), np.array([1.0]))
    write_image_result(tmp_path, IMAGE, np.zeros((0, 4)), np.zeros(0))
    boxes, _ = read_submission(tmp_path)[KEY]
    assert boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "image_path, boxes, scores, message",
    [
        ("0_Parade_marchingband_1_465.jpg", [[0, 0, 1, 1]], [1.0], "<event>/<name>"),
        ("a/b/c.jpg", [[0, 0, 1, 1]], [1.0], "<event>/<name>"),
        ("../x.jpg", [[0, 0, 1, 1]], [1.0], "<event>/<name>"),
        (IMAGE, [[0, 0, 1]], [1.0], "shape [K, 4]"),
        (IMAGE, [[0, 0, 1, 1]], [1.0, 2.0], "scores must have shape"),
        (IMAGE, [[0, 0, np.nan, 1]], [1.0], "finite"),
        (IMAGE, [[0, 0, 1, 1]], [np.inf], "finite"),
        (IMAGE, [[0, 0, 1, 1], [5, 5, 4, 9]], [1.0, 0.5], "box 1 has x2 < x1"),
    ],
)
def test_write_rejects(tmp_path, image_path, boxes, scores, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        write_image_result(tmp_path, image_path, np.array(boxes, dtype=np.float64), np.array(scores))


@pytest.mark.parametrize(
    "name_line",
    ["0_Parade_marchingband_1_465", "0_Parade_marchingband_1_465.jpg", IMAGE, "/data/WIDER_val/images/" + IMAGE],
)
def test_name_line_forms_accepted_quietly(tmp_path, caplog, name_line):
    path = write_raw(tmp_path, f"{name_line}\n1\n1 2 3 4 0.5\n")
    with caplog.at_level(logging.WARNING, logger="facegrid.wider.results"):
        boxes, scores = read_image_result(path)
    assert not caplog.records
    np.testing.assert_array_equal(boxes, [[1, 2, 4, 6]])
    np.testing.assert_array_equal(scores, [0.5])


def test_name_line_for_another_image_warns_but_reads(tmp_path, caplog):
    path = write_raw(tmp_path, "0_Parade_Parade_0_628.jpg\n1\n1 2 3 4 0.5\n")
    with caplog.at_level(logging.WARNING, logger="facegrid.wider.results"):
        result = read_submission(tmp_path)
    assert list(result) == [KEY]  # keyed by where the file lies, as read_pred.m does
    assert f"{path}:1" in caplog.text and "0_Parade_Parade_0_628" in caplog.text


def test_tolerated_text_variants(tmp_path):
    # CRLF, a byte-order mark, tabs, trailing blank lines, scientific notation
    path = write_raw(tmp_path, "\ufeff0_Parade_marchingband_1_465\r\n2\r\n1\t2 3 4 5e-1 \r\n0 0 0 0 -1\r\n\r\n\n")
    boxes, scores = read_image_result(path)
    np.testing.assert_array_equal(boxes, [[1, 2, 4, 6], [0, 0, 0, 0]])
    np.testing.assert_array_equal(scores, np.array([0.5, -1], np.float32))


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", 1, "empty"),
        ("\n\n", 1, "empty"),
        ("name\n", 2, "number of boxes, got end of file"),
        ("name\n2.0\n1 2 3 4 5\n1 2 3 4 5\n", 2, "number of boxes"),
        ("name\n-1\n", 2, "number of boxes"),
        ("name\n3\n1 2 3 4 0.5\n1 2 3 4 0.5\n", 5, "expected 3 box row"),
        ("name\n1\n1 2 3 4 0.5\n1 2 3 4 0.5\n", 4, "gives 1 box"),
        ("name\n2\n1 2 3 4 0.5\n1 2 3 4\n", 4, "5 numbers"),
        ("name\n2\n1 2 3 4 0.5\n\n", 4, "end of file"),
        ("name\n3\n1 2 3 4 0.5\n\n1 2 3 4 0.5\n", 4, "5 numbers"),
        ("name\n2\n1 2 3 4 0.5\n1 2 3 4 0.5 7\n", 4, "5 numbers"),
        ("name\n2\n1 2 3 4 0.5\n1 2 x 4 0.5\n", 4, "5 numbers"),
        ("name\n1\n1,2,3,4,0.5\n", 3, "5 numbers"),
        ("name\n2\n1 2 3 4 0.5\n1 2 3 4 nan\n", 4, "finite"),
        ("name\n1\n1 2 -3 4 0.5\n", 3, "negative width or height"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, line, message):
    path = write_raw(tmp_path, text)
    with pytest.raises(SubmissionError, match=message) as caught:
        read_submission(tmp_path)
    assert isinstance(caught.value, FacegridError)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "e" / "x.txt"
    path.parent.mkdir()
    path.write_bytes(b"x\n1\n1 2 3 4 \xff\n")
    with pytest.raises(SubmissionError, match=f"{path}:3: not UTF-8"):
        read_image_result(path)


def test_only_event_folders_are_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not a result")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "c.txt").write_text("not a result either")
    with pytest.raises(PathError, match=f"{tmp_path}: holds no result files"):
        read_submission(tmp_path)
    write_image_result(tmp_path, "a/x.jpg", np.zeros((0, 4)), np.zeros(0))
    assert list(read_submission(tmp_path)) == ["a/x"]


def test_missing_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="submission folder not found"):
        read_submission(tmp_path / "absent")
