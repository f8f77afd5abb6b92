"""Fuzzing the command line: generated arguments and small generated files.

Whatever it is given, a command ends with a documented exit status (0, 1 or
2), never a traceback, and a refusal has one error line on stderr. Each example
stays cheap: ``data check``, ``data stats`` and ``evaluate`` read only small
generated files, and ``detect``, ``train`` and ``export`` are given only
inputs they refuse before a model loads, so no example touches TensorFlow.
"""

from __future__ import annotations

import io

import numpy as np
from fuzzing import FUZZ, assert_behaves, mostly, write
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from facegrid.core.config import load_config
from facegrid.core.errors import SettingsError

#: Pieces of generated names: ordinary ones, and those that trip up paths and terminals.
NAME_PIECES = st.sampled_from(list("ab_-./ \t\néß*%") + ["\u202e", "\udcff", "..", ".jpg"])
NAMES = st.lists(NAME_PIECES, min_size=1, max_size=8).map("".join)

#: Numbers as they may appear in a row of an annotation or result file.
NUMBERS = st.one_of(
    st.integers(-5, 300).map(str), st.sampled_from(["nan", "inf", "-0", "1e309", "x", "", "3.5", "007"])
)


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


#: Contents of a generated file under the images folder.
FILES = st.one_of(
    st.builds(jpeg, st.integers(1, 40), st.integers(1, 40)),
    st.binary(max_size=40),
    st.just(b"\xff\xd8\xff\xe0 a JPEG that stops"),
)


#: Names that the generated images folder and submission often hold.
KNOWN_IMAGES = st.sampled_from(["e/a.jpg", "e/b.jpg", "e/c.png"])


def rows(plain):
    """Strategy: rows of the fields ``plain`` draws, sometimes odd fields instead."""
    odd = st.lists(NUMBERS, min_size=0, max_size=11)
    return mostly(plain, odd).map(" ".join)


#: ``x y w h`` and the six attributes of a face row, each in range.
FACE_FIELDS = st.tuples(
    *[st.integers(-5, 60).map(str)] * 2, *[st.integers(0, 60).map(str)] * 2, *[st.integers(0, 1).map(str)] * 6
)

#: ``x y w h score`` of a result row.
BOX_FIELDS = st.tuples(
    *[st.integers(-2, 60).map(str)] * 2, *[st.integers(0, 60).map(str)] * 2, st.floats(-1, 2).map(str)
)


@st.composite
def annotation_files(draw) -> bytes:
    """Bytes shaped like a WIDER annotation file, often right or almost."""
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(mostly(KNOWN_IMAGES, NAMES, st.sampled_from(["/abs.jpg", "../up.jpg"])))
        faces = draw(st.lists(rows(FACE_FIELDS), max_size=3))
        count = draw(mostly(st.just(str(len(faces))), NUMBERS))
        blocks.append("\n".join([name, count, *faces]))
    text = "\n".join(blocks).encode("utf-8", "surrogateescape") + draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    return draw(mostly(st.just(text), st.binary(max_size=60), st.binary(max_size=8).map(text.__add__)))


@st.composite
def covering_annotations(draw) -> bytes:
    """A valid annotation file of the images ``e/a``, ``e/b`` and ``e/c`` that the submissions name."""
    blocks = []
    for name in ("e/a.jpg", "e/b.jpg", "e/c.png"):
        faces = draw(st.lists(FACE_FIELDS.map(" ".join), max_size=3))
        blocks.append("\n".join([name, str(len(faces)), *faces]))
    return ("\n".join(blocks) + "\n").encode()


@st.composite
def result_files(draw) -> bytes:
    """Bytes shaped like a WIDER result file, often right or almost."""
    boxes = draw(st.lists(rows(BOX_FIELDS), max_size=3))
    count = draw(mostly(st.just(str(len(boxes))), NUMBERS))
    text = "\n".join([draw(st.one_of(st.just("a"), NAMES)), count, *boxes]).encode("utf-8", "surrogateescape")
    return draw(mostly(st.just(text), st.binary(max_size=40)))


def settings_are_valid(path) -> bool:
    """Whether generated settings happen to be sound (then training would start)."""
    try:
        load_config(path)
    except SettingsError:
        return False
    return True


@FUZZ
@given(
    annotations=annotation_files(),
    files=st.dictionaries(st.one_of(KNOWN_IMAGES, NAMES), FILES, max_size=3),
    images=st.sampled_from([None, "images", "images", "images", "images/e", ".", "absent"]),
    as_json=st.booleans(),
)
def test_data_check_behaves(workdir, annotations, files, images, as_json):
    root = workdir()
    write(root / "gt.txt", annotations)
    for name, data in files.items():
        write(root / "images" / name, data)
    args = (
        ["data", "check", root / "gt.txt"]
        + (["--images", root / images] if images else [])
        + (["--json"] if as_json else [])
    )
    assert_behaves(args + ["--workers", "1"])


@FUZZ
@given(
    annotations=annotation_files(),
    files=st.dictionaries(KNOWN_IMAGES, FILES, max_size=2),
    flags=st.lists(
        st.sampled_from(
            [
                ["--images", "images"],
                ["--images", "images"],
                ["--json"],
                ["--json"],
                ["--input-size", "64"],
                ["--min-size", "-3"],
                ["--min-size", "nan"],
                ["--max-occlusion", "1"],
                ["--keep-invalid"],
                ["--out", "plot.png"],
                ["--out", "plot.xyz"],
                ["--out", "no/dir.png"],
                ["--config", "bad.toml"],
                ["--input-size", "31"],
                ["--config", "absent.toml"],
            ]
        ),
        max_size=3,
    ),
    toml=st.one_of(st.binary(max_size=30), st.sampled_from([b"epochs = 'x'", b"nope = 1", b"input_size = 7"])),
)
def test_data_stats_behaves(workdir, annotations, files, flags, toml):
    root = workdir()
    write(root / "gt.txt", annotations)
    write(root / "bad.toml", toml)
    for name, data in files.items():
        write(root / "images" / name, data)
    args = ["data", "stats", root / "gt.txt"]
    for flag in flags:
        args += [
            flag[0],
            *(root / value if flag[0] in ("--images", "--out", "--config") else value for value in flag[1:]),
        ]
    assert_behaves(args)


@FUZZ
@given(
    results=st.dictionaries(
        mostly(st.sampled_from(["e/a", "e/b", "e/c"]), st.just("e/f/g"), NAMES), result_files(), min_size=1, max_size=3
    ),
    annotations=mostly(covering_annotations(), annotation_files()),
    reference=mostly(st.just("--annotations"), st.sampled_from(["--ground-truth", "both", "none"])),
    iou=st.sampled_from(["0.5", "0.5", "0.5", "1", "nan", "0", "x"]),
    plot=st.sampled_from([None, "pr.png", "pr.txt"]),
)
def test_evaluate_behaves(workdir, results, annotations, reference, iou, plot):
    root = workdir()
    (root / "pred").mkdir()
    for key, data in results.items():
        write(root / "pred" / f"{key}.txt", data)
    write(root / "gt.txt", annotations)
    write(root / "mats" / "wider_face_val.mat", annotations)
    args = ["evaluate", root / "pred", "--iou", iou, *(["--plot", root / plot] if plot else [])]
    if reference in ("--annotations", "both"):
        args += ["--annotations", root / "gt.txt"]
    if reference in ("--ground-truth", "both"):
        args += ["--ground-truth", root / "mats"]
    assert_behaves(args)


#: detect arguments refused before a model loads: (arguments, files to create under the work folder).
REFUSED_DETECT = st.sampled_from(
    [
        (["empty"], {}),
        (["videos"], {"videos/clip.mp4": b"\x00\x00\x00\x18ftypmp42"}),
        (["absent.jpg"], {}),
        (["one.jpg", "--wider-submission", "sub"], {"one.jpg": b"x"}),
        (["images/e", "--wider-submission", "sub"], {"images/e/a.jpg": b"x"}),
        (["images", "--wider-submission", "sub"], {"images/e/x.jpg": b"x", "images/e/x.png": b"x"}),
    ]
)


@FUZZ
@given(
    case=REFUSED_DETECT,
    options=st.lists(
        st.sampled_from(
            [
                ["--threshold", "1.5"],
                ["--threshold", "nan"],
                ["--nms-iou", "-0.1"],
                ["--batch-size", "0"],
                ["--on-bad-image", "ignore"],
                ["--json"],
                ["--out", "out"],
                ["--model", "absent.keras"],
            ]
        ),
        max_size=2,
    ),
    name=NAMES,
)
def test_detect_refuses_before_loading_a_model(workdir, case, options, name):
    root = workdir()
    inputs, files = case
    for path, data in files.items():
        write(root / path, data)
    (root / "empty").mkdir()
    write(root / "videos" / f"{name}.mov", b"not an image")  # a strangely named non-image beside the video
    args = ["detect", *(root / item if item != "--wider-submission" else item for item in inputs)]
    for option in options:
        args += [option[0], *(root / value if option[0] in ("--out", "--model") else value for value in option[1:])]
    assert assert_behaves(args).exit_code == 2


@FUZZ
@given(
    broken=st.sampled_from(
        [
            ["--epochs", "0"],
            ["--batch-size", "-1"],
            ["--pipeline", "keras"],
            ["--input-size", "16"],
            ["--learning-rate", "fast"],
            ["--on-bad-image", "maybe"],
            ["--val-annotations", "gt.txt"],
            ["--config", "bad.toml"],
            ["--grid-size", "0"],
        ]
    ),
    toml=st.one_of(st.binary(max_size=30), st.sampled_from([b"epochs = 'x'", b"nope = 1", b"input_size = 7"])),
    extra=st.lists(st.sampled_from([["--resume"], ["--seed", "3"], ["--workers", "1"]]), max_size=2),
)
def test_train_and_export_refuse_bad_arguments_before_loading_keras(workdir, broken, toml, extra):
    root = workdir()
    write(root / "gt.txt", b"e/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    write(root / "bad.toml", toml)
    broken = [broken[0], *(str(root / v) if v.endswith((".txt", ".toml")) else v for v in broken[1:])]
    args = [
        "train",
        "--annotations",
        root / "gt.txt",
        "--images",
        root,
        "--run",
        root / "run",
        *broken,
        *(item for option in extra for item in option),
    ]
    if broken[0] == "--config" and settings_are_valid(root / "bad.toml"):
        return
    assert assert_behaves(args).exit_code == 2
    export = (
        ["export", root / "absent.keras", root / "out.keras"]
        if "--resume" in args
        else ["export", root / "gt.txt", root / "out.keras", "--detect-size", "16"]
    )
    assert assert_behaves(export).exit_code == 2
