"""The annotation index and face filtering (``facegrid.wider.index``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facegrid.core.boxes import from_wider
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import ATTRIBUTE_MAX, ATTRIBUTES, FaceFilter, Index, Note, holdout_split


def make_index(faces_per_image, boxes, attributes=None) -> Index:
    boxes = np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
    counts = np.asarray(faces_per_image, dtype=np.int64)
    assert counts.sum() == len(boxes)
    if attributes is None:
        attributes = np.zeros((len(boxes), len(ATTRIBUTES)), dtype=np.uint8)
    return Index(
        source="mem.txt",
        paths=np.array([f"img{i}.jpg" for i in range(len(counts))]),
        name_lines=np.arange(len(counts), dtype=np.int32) + 1,
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        boxes=boxes,
        attributes=np.asarray(attributes, dtype=np.uint8).reshape(-1, len(ATTRIBUTES)),
        face_lines=np.arange(len(boxes), dtype=np.int32) + 100,
    )


def attrs(**values) -> list[int]:
    return [values.get(name, 0) for name in ATTRIBUTES]


@pytest.fixture
def small() -> Index:
    # image 0: a normal face, an invalid one, a zero-width one
    # image 1: only a zero-height face
    # image 2: no faces
    # image 3: a tiny blurry face, a large occluded one
    return make_index(
        [3, 1, 0, 2],
        [[0, 0, 20, 30], [5, 5, 40, 40], [1, 1, 0, 9], [2, 2, 9, 0], [3, 3, 4, 6], [10, 10, 50, 60]],
        [attrs(), attrs(invalid=1), attrs(), attrs(), attrs(blur=2), attrs(occlusion=2, blur=1)],
    )


def test_basic_accessors(small):
    assert len(small) == 4
    assert small.num_faces == 6
    np.testing.assert_array_equal(small.faces_per_image(), [3, 1, 0, 2])
    np.testing.assert_array_equal(small.attribute("invalid"), [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(small.attribute("blur"), [0, 0, 0, 0, 2, 1])
    np.testing.assert_array_equal(small.attribute("occlusion"), [0, 0, 0, 0, 0, 2])
    np.testing.assert_array_equal(small.image_boxes(3), [[3, 3, 7, 9], [10, 10, 60, 70]])
    assert small.image_boxes(3).dtype == np.float32
    assert small.image_boxes(2).shape == (0, 4)
    assert small.where(7) == "mem.txt:7"


def test_attribute_names_and_limits_follow_the_official_readme():
    assert ATTRIBUTES == ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
    assert ATTRIBUTE_MAX == {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}
    with pytest.raises(ValueError):
        make_index([0], []).attribute("size")


def test_default_filter_drops_invalid_and_zero_size_only(small):
    keep = FaceFilter().mask(small)
    np.testing.assert_array_equal(keep, [True, False, False, False, True, True])
    filtered = FaceFilter().apply(small)
    assert len(filtered) == len(small)
    assert filtered.paths.tolist() == small.paths.tolist()
    np.testing.assert_array_equal(filtered.faces_per_image(), [1, 0, 0, 2])
    np.testing.assert_array_equal(filtered.image_boxes(0), [[0, 0, 20, 30]])
    np.testing.assert_array_equal(filtered.image_boxes(3), [[3, 3, 7, 9], [10, 10, 60, 70]])
    np.testing.assert_array_equal(filtered.face_lines, [100, 104, 105])


def test_filter_switches(small):
    np.testing.assert_array_equal(FaceFilter(drop_invalid=False).mask(small), [1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(FaceFilter(drop_zero_size=False).mask(small), [1, 0, 1, 1, 1, 1])
    none = FaceFilter(drop_invalid=False, drop_zero_size=False)
    assert none.mask(small).all()
    assert none.apply(small).num_faces == small.num_faces


def test_min_size_uses_the_shorter_side(small):
    # shorter sides: 20, 35, 0, 0, 4, 50
    np.testing.assert_array_equal(FaceFilter(min_size=4).mask(small), [1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(FaceFilter(min_size=5).mask(small), [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(FaceFilter(min_size=21).mask(small), [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(FaceFilter(min_size=20.5, drop_invalid=False).mask(small), [0, 1, 0, 0, 0, 1])


def test_max_blur_and_max_occlusion(small):
    np.testing.assert_array_equal(FaceFilter(max_blur=1).mask(small), [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(FaceFilter(max_blur=0).mask(small), [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(FaceFilter(max_blur=2).mask(small), FaceFilter().mask(small))
    np.testing.assert_array_equal(FaceFilter(max_occlusion=1).mask(small), [1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(FaceFilter(max_occlusion=2).mask(small), FaceFilter().mask(small))


def test_select_faces_rejects_a_wrong_mask(small):
    with pytest.raises(ValueError):
        small.select_faces(np.ones(5, dtype=bool))


def test_select_faces_keeps_everything_else(small):
    filtered = small.select_faces(np.zeros(small.num_faces, dtype=bool))
    assert len(filtered) == 4 and filtered.num_faces == 0
    np.testing.assert_array_equal(filtered.offsets, [0, 0, 0, 0, 0])
    assert filtered.source == small.source
    np.testing.assert_array_equal(filtered.name_lines, small.name_lines)
    # the original is untouched
    assert small.num_faces == 6


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=12),
    data=st.data(),
)
def test_select_faces_offsets_stay_consistent(counts, data):
    n = sum(counts)
    boxes = np.arange(n * 4, dtype=np.int32).reshape(n, 4)
    index = make_index(counts, boxes)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    selected = index.select_faces(keep)
    assert len(selected) == len(index)
    assert selected.num_faces == keep.sum()
    assert selected.faces_per_image().sum() == keep.sum()
    for i in range(len(index)):
        rows = slice(index.offsets[i], index.offsets[i + 1])
        np.testing.assert_array_equal(selected.image_boxes(i), from_wider(boxes[rows][keep[rows]]))
        np.testing.assert_array_equal(
            selected.face_lines[selected.offsets[i] : selected.offsets[i + 1]], index.face_lines[rows][keep[rows]]
        )


def test_default_filter_on_real_val_never_drops_an_image(split_file):
    index = read_annotations(split_file("val"))
    filtered = FaceFilter().apply(index)
    assert len(filtered) == len(index) == 3_226
    invalid = index.attribute("invalid") == 1
    zero = (index.boxes[:, 2:] == 0).any(axis=1)
    assert filtered.num_faces == index.num_faces - int((invalid | zero).sum())
    assert int(filtered.faces_per_image().sum()) == filtered.num_faces
    assert (filtered.attribute("invalid") == 0).all()
    assert (filtered.boxes[:, 2:] > 0).all()
    # per image, exactly the kept rows remain, in file order
    keep = ~(invalid | zero)
    for i in range(0, len(index), 97):
        rows = slice(index.offsets[i], index.offsets[i + 1])
        np.testing.assert_array_equal(filtered.image_boxes(i), index.image_boxes(i)[keep[rows]])


def test_note_is_a_value():
    assert Note("utf8_bom", 1, "x") == Note("utf8_bom", 1, "x")
    assert Note("utf8_bom", 1, "x") != Note("utf8_bom", 2, "x")


def test_take_selects_images_with_all_their_faces(tmp_path):
    from facegrid.wider.annotations import format_annotations, read_annotations

    path = tmp_path / "gt.txt"
    path.write_text(
        "a.jpg\n2\n1 1 5 5 0 0 0 0 0 0 \n9 9 5 5 1 0 0 0 0 0 \n"
        "b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
        "c.jpg\n1\n3 3 7 7 0 0 0 1 0 0 \n"
    )
    index = read_annotations(path)
    picked = index.take([2, 0, 1, 2])
    assert picked.paths.tolist() == ["c.jpg", "a.jpg", "b.jpg", "c.jpg"]
    assert picked.faces_per_image().tolist() == [1, 2, 0, 1]
    assert picked.face_lines.tolist() == [10, 3, 4, 10]
    assert format_annotations(index.take([0, 1, 2])) == path.read_text()
    assert len(index.take([])) == 0 and index.take([]).num_faces == 0


def test_a_holdout_split_is_seeded_disjoint_and_in_file_order():
    index = make_index([1, 0, 2, 1, 1], [[k, 0, 5, 5] for k in range(5)])
    rest, held = holdout_split(index, 2, seed=0)
    assert len(held) == 2 and len(rest) == 3
    assert sorted(rest.paths.tolist() + held.paths.tolist()) == sorted(index.paths.tolist())
    assert rest.paths.tolist() == sorted(rest.paths.tolist()) and held.paths.tolist() == sorted(held.paths.tolist())
    assert rest.num_faces + held.num_faces == index.num_faces  # each image with its faces
    again, _ = holdout_split(index, 2, seed=0)
    assert again.paths.tolist() == rest.paths.tolist()
    assert {tuple(holdout_split(index, 2, seed=s)[1].paths) for s in range(20)} != {tuple(held.paths)}
    for bad in (0, 5):
        with pytest.raises(ValueError, match=f"a hold-out of {bad} image"):
            holdout_split(index, bad)
