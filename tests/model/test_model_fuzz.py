"""Fuzzing the commands that load a model: generated model files and settings files beside them.

``detect``, ``val``, ``export`` and ``train --init`` are given a model file
that is sound, cut short, damaged, of another format than its name says, a
zip without a model, a folder; beside it settings that are its own, another
model's (other strides, a single grid), not TOML, or none. Each command ends
with a documented exit status, one line when it refuses, never a traceback
(:func:`test_cli_fuzz.assert_behaves`); a sound model beside another model's
settings is always refused, and training never starts from a model it
cannot use. ``val`` runs on a WIDER-like folder of one generated image under
a real validation name, its ground truth the official one or a broken copy.
"""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
from conftest import TINY_PYRAMID_SETTINGS
from fuzzing import FUZZ, assert_behaves, write
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from facegrid.core.config import Config

TINY = Config(**TINY_PYRAMID_SETTINGS)

#: Settings files that are not the tiny model's own: other layouts, and files that are not settings.
OTHER_SETTINGS = {
    "other strides": TINY.replace(strides=(8, 16, 32)).to_toml().encode(),
    "one stride": TINY.replace(strides=(32,)).to_toml().encode(),
    "single grid": Config(input_size=64, grid_size=2, alpha=0.35, backbone_weights="none").to_toml().encode(),
    "not TOML": b"strides = [16,\n",
    "unknown key": b"colour = 'blue'\n",
    "wrong type": b"strides = 'sixteen'\n",
    "binary": b"\xff\xfe\x00garbage",
}

#: A WIDER FACE validation image name the official ground truth lists.
VAL_KEY = "0--Parade/0_Parade_marchingband_1_465"


@pytest.fixture
def models(tiny_pyramid) -> dict[str, bytes]:
    """The bytes of the tiny pyramid detector as .keras and as .tflite."""
    return {suffix: (tiny_pyramid / f"tiny{suffix}").read_bytes() for suffix in (".keras", ".tflite")}


def zip_without_model() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("notes.txt", "no model")
    return buffer.getvalue()


@st.composite
def model_files(draw, models):
    """``(name, bytes or None for a folder, sound)``: a model file as a user might hand it over."""
    source = draw(st.sampled_from([".keras", ".tflite"]))
    name = draw(st.sampled_from([f"m{source}"] * 4 + ["m.keras", "m.tflite", "m.onnx", "m"]))
    data = models[source]
    how = draw(st.sampled_from(["sound"] * 6 + ["cut", "flipped", "garbage", "zip", "empty", "folder"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flipped":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    elif how == "garbage":
        data = draw(st.binary(max_size=64))
    elif how == "zip":
        data = zip_without_model()
    elif how == "empty":
        data = b""
    elif how == "folder":
        data = None
    sound = how == "sound" and name.endswith(source)
    return name, data, sound


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 100, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@FUZZ
@given(
    data=st.data(),
    settings=st.sampled_from(["own", "own", "none", *OTHER_SETTINGS, "other strides", "single grid"]),
    command=st.sampled_from(["detect", "detect", "val", "export", "train"]),
    ground_truth=st.sampled_from(["official", "official", "broken", "absent"]),
)
def test_a_model_and_its_settings_are_used_or_refused_in_one_line(
    workdir, models, wider, samples, data, settings, command, ground_truth
):
    root = workdir()
    name, content, sound = data.draw(model_files(models))
    model = root / name
    if content is None:
        model.mkdir()
    else:
        model.write_bytes(content)
    beside = model.with_suffix(".toml") if model.suffix else model.with_name(model.name + ".toml")
    if settings != "none":
        beside.write_bytes(TINY.to_toml().encode() if settings == "own" else OTHER_SETTINGS[settings])
    if command == "detect":
        args = ["detect", samples / "images" / "portraits" / "astronaut.png", "--model", model]
    elif command == "export":
        args = ["export", model, root / "out.keras"]
    elif command == "train":
        if sound and settings == "own":
            return  # it would train: the training tests cover that
        args = [
            "train",
            "--annotations",
            samples / "faces_bbx_gt.txt",
            "--images",
            samples / "images",
            "--run",
            root / "run",
            "--init",
            model,
        ]
    else:
        write(root / "data" / "WIDER_val" / "images" / f"{VAL_KEY}.jpg", jpeg())
        truth = root / "data" / "eval_tools" / "ground_truth"
        if ground_truth == "official":
            shutil.copytree(wider / "eval_tools" / "ground_truth", truth)
        elif ground_truth == "broken":
            write(truth / "wider_face_val.mat", data.draw(st.binary(max_size=40)))
        args = ["val", model, "--data", root / "data"]
    result = assert_behaves(args)
    if sound and settings in OTHER_SETTINGS and command in ("detect", "val", "export") and result.exit_code == 0:
        pytest.fail(f"another model's settings ({settings}) were used: {args}")
    if sound and settings in ("other strides", "one stride", "single grid") and command == "detect":
        assert "another model's" in result.stderr, result.stderr
    if command == "train":
        assert result.exit_code == 2 and not (root / "run" / "last.keras").exists(), result.output
