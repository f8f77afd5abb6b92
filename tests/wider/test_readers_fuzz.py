"""Fuzzing the readers: random bytes and random mutations of genuine files.

Whatever they are given, the annotation reader returns an index or raises
:class:`~facegrid.wider.annotations.AnnotationError` (FILE:LINE), and the image readers
return upright RGB pixels or raise :class:`~facegrid.core.errors.ImageError`
(naming the path). Any other exception is a bug.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facegrid.core.errors import AnnotationError, ImageError
from facegrid.data.geometry import load_input
from facegrid.data.images import probe, read_image, verify_image
from facegrid.wider.annotations import read_annotations

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def genuine_annotations(samples, wider_lines) -> bytes:
    """The first lines of the official train file where present, else the bundled samples' file."""
    return wider_lines or (samples / "faces_bbx_gt.txt").read_bytes()


@pytest.fixture(scope="module")
def wider_lines():
    from conftest import wider_root

    path = wider_root() / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        return b"".join(handle.readline() for _ in range(400))


@pytest.fixture(scope="module")
def genuine_jpeg(samples) -> bytes:
    """A real photo, re-encoded small (with an EXIF block) so that each decode is quick."""
    with Image.open(samples / "images" / "background" / "rocket.jpg") as photo:
        small = photo.convert("RGB").resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85, exif=exif)
    return buffer.getvalue()


def mutations(data_fixture_value: bytes):
    """Strategy: ``data`` with a few random edits (overwrite, insert, delete, truncate, duplicate)."""

    def apply(edits):
        data = bytearray(data_fixture_value)
        for kind, where, payload in edits:
            at = int(where * len(data)) if data else 0
            if kind == "overwrite" and data:
                data[at : at + len(payload)] = payload[: max(len(data) - at, 0)]
            elif kind == "insert":
                data[at:at] = payload
            elif kind == "delete":
                del data[at : at + len(payload) + 1]
            elif kind == "truncate":
                del data[at:]
            elif kind == "duplicate":
                data[at:at] = data[at : at + 64]
        return bytes(data)

    edit = st.tuples(
        st.sampled_from(["overwrite", "insert", "delete", "truncate", "duplicate"]),
        st.floats(0, 1, allow_nan=False),
        st.binary(min_size=1, max_size=12),
    )
    return st.lists(edit, min_size=1, max_size=4).map(apply)


def read_or_annotation_error(path):
    try:
        index = read_annotations(path)
    except AnnotationError as error:
        assert f"{path}:" in str(error)
        return None
    assert len(index.offsets) == len(index) + 1
    return index


def read_or_image_error(path):
    try:
        info = probe(path)
        pixels = read_image(path)
        verify_image(path)
        x, size = load_input(path, 32, crop=(0.1, 0.2, 0.9, 0.8))
    except ImageError as error:
        assert str(path) in str(error)
        return None
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert (info.width, info.height) == size
    assert x.shape == (32, 32, 3)
    return pixels


@FUZZ
@given(data=st.binary(max_size=600))
def test_annotation_reader_on_random_bytes(workdir, data):
    path = workdir / "random.txt"
    path.write_bytes(data)
    read_or_annotation_error(path)


@FUZZ
@given(data=st.data())
def test_annotation_reader_on_mutated_genuine_files(workdir, genuine_annotations, data):
    path = workdir / "mutated.txt"
    path.write_bytes(data.draw(mutations(genuine_annotations)))
    read_or_annotation_error(path)


@FUZZ
@given(data=st.binary(max_size=600))
def test_image_readers_on_random_bytes(workdir, data):
    path = workdir / "random.jpg"
    path.write_bytes(data)
    read_or_image_error(path)


@FUZZ
@given(data=st.data())
def test_image_readers_on_mutated_genuine_jpeg(workdir, genuine_jpeg, data):
    path = workdir / "mutated.jpg"
    path.write_bytes(data.draw(mutations(genuine_jpeg)))
    read_or_image_error(path)


@FUZZ
@given(data=st.data())
def test_image_readers_on_mutated_png(workdir, data):
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48 * 40 * 3, dtype=np.uint8).reshape(40, 48, 3)).save(buffer, "PNG")
    path = workdir / "mutated.png"
    path.write_bytes(data.draw(mutations(buffer.getvalue())))
    read_or_image_error(path)
