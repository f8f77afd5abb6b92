"""The detector network: shapes for every grid setting, uint8 input, any size, safe saving."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from facegrid.core.config import Config
from facegrid.model.network import build_detector


def tiny(**settings) -> Config:
    """A small MobileNetV2 from random weights (the default backbone, the bundled ImageNet one, is alpha 1.0)."""
    return Config(alpha=0.35, backbone_weights="none", backbone_style="keras", **settings)


@pytest.mark.parametrize(("grid", "taps"), [(3, 0), (6, 1), (12, 2)])
def test_output_grid_for_each_stride(grid, taps):
    model = build_detector(tiny(input_size=96, grid_size=grid, head_channels=16))
    out = model.predict(np.zeros((2, 96, 96, 3), np.uint8), verbose=0)
    assert out.shape == (2, grid, grid, 5)
    assert ((out >= 0) & (out <= 1)).all()  # every channel through a sigmoid
    assert len(model.get_layer("backbone").outputs) == taps + 1


def test_fully_convolutional_and_fresh_objectness_is_the_prior():
    model = build_detector(tiny(input_size=64, grid_size=4, head_channels=8))
    for size in (64, 128, 160):
        out = model.predict(np.full((1, size, size, 3), 128, np.uint8), verbose=0)
        assert out.shape == (1, size // 16, size // 16, 5)
    assert np.median(out[..., 0]) == pytest.approx(0.01, abs=0.02)


def test_pixels_are_scaled_inside_the_model():
    model = build_detector(tiny(input_size=64, grid_size=2, head_channels=8))
    scale = model.get_layer("to_unit_range")
    out = np.asarray(scale(np.array([[[[0, 127.5, 255]]]], np.float32)))
    np.testing.assert_allclose(out.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)
    assert model.input.dtype == "uint8"


def test_saves_and_loads_in_safe_mode(tmp_path):
    model = build_detector(tiny(input_size=64, grid_size=4, head_channels=8))
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_sizes_stay_fractions_of_the_input_at_any_input_size():
    """A face of the same pixel size must read as a smaller fraction of a larger input."""
    model = build_detector(tiny(input_size=64, grid_size=4, head_channels=8))
    small = model.predict(np.full((1, 64, 64, 3), 90, np.uint8), verbose=0)
    large = model.predict(np.full((1, 128, 128, 3), 90, np.uint8), verbose=0)
    # A uniform image gives the same raw output in every interior cell at both sizes.
    np.testing.assert_allclose(large[0, 3, 3, 3:], small[0, 1, 1, 3:] / 2, rtol=1e-4)
    np.testing.assert_allclose(large[0, 3, 3, :3], small[0, 1, 1, :3], rtol=1e-4)


def test_model_file_carrying_code_is_refused_never_run(tmp_path):
    from facegrid.core.errors import ModelFileError
    from facegrid.model.network import load_detector

    payload = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    payload.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match="refused: it carries Python code"):
        load_detector(tmp_path / "lambda.keras")
    (tmp_path / "garbage.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a .keras model file"):
        load_detector(tmp_path / "garbage.keras")
    with pytest.raises(ModelFileError, match="no such file"):
        load_detector(tmp_path / "missing.keras")


def test_files_that_hold_no_facegrid_model_are_refused_in_one_line(tmp_path, samples):
    import zipfile

    from click.testing import CliRunner

    from facegrid.cli import main
    from facegrid.core.errors import ModelFileError
    from facegrid.model.network import load_detector

    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as zipped:
        zipped.writestr("notes.txt", "no model here")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(tmp_path / "dense.keras")
    (tmp_path / "folder.keras").mkdir()
    cases = {
        "empty.keras": "a zip archive without a Keras model in it (no config.json)",
        "dense.keras": "a Keras model, but not a facegrid detector: its output is (None, 3)",
        "folder.keras": "a folder that is no SavedModel",
    }
    for name, reason in cases.items():
        with pytest.raises(ModelFileError, match=re.escape(f"{name}: {reason}")):
            load_detector(tmp_path / name)
        (tmp_path / name).with_suffix(".toml").write_text("")  # settings beside it: the model itself is at fault
        for args in (
            ["export", tmp_path / name, tmp_path / "out.keras"],
            [
                "train",
                "--annotations",
                samples / "faces_bbx_gt.txt",
                "--images",
                samples / "images",
                "--run",
                tmp_path / "run",
                "--init",
                tmp_path / name,
            ],
            ["detect", samples / "images", "--model", tmp_path / name],
        ):
            result = CliRunner().invoke(main, [str(a) for a in args])
            assert result.exit_code == 2 and result.stderr.count("\n") == 1, (args, result.output)
            assert name in result.stderr and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.keras").exists()  # nothing left behind


def test_detect_command_refuses_a_model_carrying_code(tmp_path, samples):
    from click.testing import CliRunner

    from facegrid.cli import main

    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x + 1)]).save(tmp_path / "evil.keras")
    result = CliRunner().invoke(main, ["detect", str(samples / "images"), "--model", str(tmp_path / "evil.keras")])
    assert result.exit_code == 2
    assert "evil.keras: refused: it carries Python code" in result.output


PYRAMID = tiny(input_size=64, strides=(8, 16, 32), grid_size=0, head_channels=8)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 160), (224, 320)])
def test_pyramid_output_is_every_level_of_any_input(height, width):
    model = build_detector(PYRAMID)
    out = model.predict(np.full((2, height, width, 3), 100, np.uint8), verbose=0)
    assert out.shape == (2, PYRAMID.codec.cells_for(width, height), 5)
    assert ((out[..., 0] > 0) & (out[..., 0] < 1)).all() and (out[..., 3:] > 0).all()
    assert np.median(out[..., 0]) == pytest.approx(0.01, abs=0.02)  # the score prior
    _, _, levels = PYRAMID.codec.cell_table(width, height)
    # sizes start at 2 strides on the finest level, 4 on the others (an untrained head's median)
    assert np.median(out[0, levels == 0, 3]) == pytest.approx(2.0, rel=0.5)
    assert np.median(out[0, levels == 2, 3]) == pytest.approx(4.0, rel=0.5)


def test_pyramid_saves_and_loads_in_safe_mode(tmp_path):
    model = build_detector(PYRAMID)
    x = np.random.default_rng(1).integers(0, 256, (1, 96, 128, 3), dtype=np.uint8)
    model.save(tmp_path / "p.keras")
    again = keras.saving.load_model(tmp_path / "p.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_backbone_can_start_from_another_detector(tmp_path):
    first = build_detector(PYRAMID)
    first.get_layer("backbone").get_layer("Conv1").set_weights(
        [w + 1.0 for w in first.get_layer("backbone").get_layer("Conv1").get_weights()]
    )
    first.save(tmp_path / "first.keras")
    second = build_detector(PYRAMID.replace(backbone_weights=str(tmp_path / "first.keras")))
    for a, b in zip(first.get_layer("backbone").weights, second.get_layer("backbone").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    heads = [w for w in second.weights if "cells" in w.path]
    assert heads  # the head is new


def test_the_default_backbone_starts_from_the_bundled_imagenet_weights():
    import h5py

    from facegrid.core.resources import bundled_backbone_path

    backbone = build_detector(Config()).get_layer("backbone")
    with h5py.File(bundled_backbone_path(), "r") as saved:
        # a .weights.h5 names each layer by its type and rank among that type: "conv2d" is the first, Conv1
        convs = sorted((k for k in saved["layers"] if k.startswith("conv2d")), key=lambda k: int(k[7:] or 0))
        for layer, key in {"Conv1": convs[0], "bn_Conv1": "batch_normalization", "Conv_1": convs[-1]}.items():
            weights = backbone.get_layer(layer).get_weights()
            assert len(weights) == len(saved[f"layers/{key}/vars"]) > 0
            for i, weight in enumerate(weights):
                np.testing.assert_array_equal(weight, saved[f"layers/{key}/vars/{i}"][()])
