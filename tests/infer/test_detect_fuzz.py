"""Fuzzing detect's inputs and outputs: generated trees of images and videos, generated --out and result folders.

Whatever the tree and the options, detect ends with a documented exit status
and no traceback (:func:`test_cli_fuzz.assert_behaves`), never changes a file
it reads, and replaces a file that was there before only when --overwrite is
given. The model is a tiny export run by LiteRT, so an example costs
milliseconds once the model is loaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from fuzzing import FUZZ, assert_behaves, write
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from facegrid.core.suffixes import IMAGE_SUFFIXES
from facegrid.infer.inputs import VIDEO_SUFFIXES


@pytest.fixture
def tiny_export(tiny_pyramid):
    """The tiny pyramid detector exported to LiteRT, its settings beside it."""
    return tiny_pyramid / "tiny.tflite"


def picture(kind: str, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buffer, kind)
    return buffer.getvalue()


def video(frames: int, width: int, height: int) -> bytes:
    """An MPEG-4 video of ``frames`` grey frames, as bytes."""
    path = Path(f"/tmp/facegrid-fuzz-{frames}-{width}x{height}.mp4")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (width, height))
    for k in range(frames):
        writer.write(np.full((height, width, 3), 30 * k, np.uint8))
    writer.release()
    data = path.read_bytes()
    path.unlink()
    return data


#: Files a tree may hold, by name: images, videos and others, each sometimes broken.
NAMES = [
    "in/a.jpg",
    "in/b.png",
    "in/e/c.jpg",
    "in/e/c.png",
    "in/v.mp4",
    "in/e/w.avi",
    "in/x.txt",
    "out/a.jpg",
    "out/v.mp4",
    "out/e/c.jpg",
    "in/out/a.jpg",
    "sub/e/c.txt",
    "in/e/c.txt",
]


def contents(name: str):
    suffix = Path(name).suffix
    broken = st.one_of(st.binary(max_size=30), st.just(b"\xff\xd8\xff\xe0 a JPEG that stops"))
    if suffix in IMAGE_SUFFIXES:
        kind = "PNG" if suffix == ".png" else "JPEG"
        good = st.builds(picture, st.just(kind), st.integers(8, 80), st.integers(8, 80))
    elif suffix in VIDEO_SUFFIXES:
        good = st.builds(video, st.integers(1, 3), st.sampled_from([32, 48, 96]), st.sampled_from([32, 64]))
    else:
        good = st.just(b"a user's own file\n")
    return st.one_of(good, good, good, broken)


@st.composite
def trees(draw) -> dict[str, bytes]:
    """An image and a video in ``in/`` (usually readable), and up to five more files of :data:`NAMES`."""
    names = ["in/a.jpg", "in/v.mp4"] + draw(st.lists(st.sampled_from(NAMES[2:]), max_size=5, unique=True))
    return {name: draw(contents(name)) for name in names}


def inputs_read(root: Path, given: list[str]) -> set[Path]:
    """The files detect reads for ``given``: files as given, and the images and videos below folders."""
    read = set()
    for item in (root / name for name in given):
        if item.is_dir():
            read |= {p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES}
        elif item.is_file():
            read.add(item)
    return read


@FUZZ
@given(
    tree=trees(),
    given_inputs=st.sampled_from(
        [["in"], ["in/a.jpg"], ["in/v.mp4"], ["in", "in/a.jpg"], ["in/e"], ["in/b.png", "in/e"]]
    ),
    out=st.sampled_from([None, "out", "out", "in", "in", "in/e", "in/out", "."]),
    options=st.lists(
        st.sampled_from(
            [
                ["--overwrite"],
                ["--overwrite"],
                ["--json"],
                ["--on-bad-image", "skip"],
                ["--batch-size", "2"],
                ["--wider-submission", "sub"],
                ["--wider-submission", "in"],
                ["--threshold", "0"],
            ]
        ),
        max_size=3,
        unique_by=lambda option: option[0],
    ),
)
def test_detect_changes_no_input_and_replaces_only_when_asked(workdir, tiny_export, tree, given_inputs, out, options):
    root = workdir()
    for name, data in tree.items():
        write(root / name, data)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    read = inputs_read(root, given_inputs)
    args = [
        "detect",
        *(root / name for name in given_inputs),
        "--model",
        tiny_export,
        *(["--out", root / out] if out else []),
    ]
    for option in options:
        args += [option[0], *(root / value if option[0] == "--wider-submission" else value for value in option[1:])]
    result = assert_behaves(args)
    for path, data in before.items():
        if path in read or ["--overwrite"] not in options:
            assert path.read_bytes() == data, (path, args, result.output)
    if result.exit_code == 0 and out:
        assert all(not p.name.startswith(".") for p in (root / out).rglob("*")), "a temporary file was left"
