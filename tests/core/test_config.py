"""Config: defaults, TOML overrides, and clear errors for bad settings."""

from __future__ import annotations

import pytest

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.config import BUNDLED_IMAGENET, Config, load_config
from facegrid.core.errors import SettingsError
from facegrid.core.resources import bundled_model_path
from facegrid.data.augment import augmentation


def test_defaults_are_the_documented_detector():
    config = Config()
    assert (config.input_size, config.grid_size, config.alpha) == (224, 7, 1.0)
    assert (config.backbone_weights, config.backbone_style) == (BUNDLED_IMAGENET, "torchvision")
    assert config.codec == GridCodec(7) and config.detection_input_size == 224
    assert config.pipeline == "tfdata"


def test_the_bundled_settings_are_a_pyramid():
    config = load_config(bundled_model_path().with_suffix(".toml"))
    assert config.strides == (8, 16, 32) and config.codec == PyramidCodec((8, 16, 32))
    assert augmentation(config).crop_scale == config.crop_scale


def test_pyramid_settings_read_back_as_integers(tmp_path):
    path = tmp_path / "pyramid.toml"
    path.write_text("strides = [8, 16]\ngrid_size = 0\n")
    config = load_config(path)
    assert config.strides == (8, 16) and all(isinstance(s, int) for s in config.strides)
    config.save(tmp_path / "again.toml")
    assert load_config(tmp_path / "again.toml") == config


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("input_size = 320\ngrid_size = 20\nlearning_rate = 1\nepochs = 5\n")
    config = load_config(path, epochs=7, seed=None)
    assert (config.input_size, config.grid_size, config.epochs) == (320, 20, 7)
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)


def test_saved_config_reads_back(tmp_path):
    config = Config(input_size=256, grid_size=16, detect_size=512, alpha=1.0, backbone_style="torchvision")
    config.save(tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml") == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochz = 3\n", "unknown setting(s) epochz"),
        ("epochs = 'three'\n", "epochs must be int"),
        ("augment = 1\n", "augment must be bool"),
        ("epochs = \n", "not valid TOML"),
    ],
)
def test_bad_toml_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"input_size": 224, "grid_size": 10}, "grid_size 10 does not fit input_size 224"),
        ({"input_size": 200, "grid_size": 25}, "input_size must be a multiple of 32"),
        ({"detect_size": 500}, "detect_size must be a multiple of 32"),
        ({"backbone_style": "caffe"}, "backbone_style"),
        (
            {"alpha": 1.4},
            "fits alpha 1.0 or less with backbone_style 'torchvision' only, not alpha 1.4: for alpha 1.4, "
            "start from random weights with backbone_weights 'none'",
        ),
        (
            {"backbone_style": "keras"},
            "only, not backbone_style 'keras': for backbone_style 'keras', start from random",
        ),
        ({"pipeline": "torch"}, "pipeline must be one of 'tfdata', 'sequence', 'puretf', got 'torch'"),
        ({"on_bad_image": "ignore"}, "on_bad_image must be 'raise' or 'skip'"),
        ({"backbone_weights": "imagenet"}, "fit backbone_style 'keras' only: set backbone_style 'keras'"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"panels_every": -1}, "panels_every must be >= 0"),
        ({"strides": (8, 16)}, "grid_size must be 0 with strides"),
        ({"strides": (16, 8), "grid_size": 0}, "increasing"),
        ({"strides": (4, 8), "grid_size": 0}, "strides must be among"),
        ({"strides": (8,), "grid_size": 0, "focal_alpha": 0.5}, "focal_alpha applies to single-grid"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
    ],
)
def test_inconsistent_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        Config(**settings)


def test_any_alpha_and_style_start_from_random_or_keras_weights():
    assert Config(alpha=0.5, backbone_weights="none").backbone_style == "torchvision"
    assert Config(alpha=0.35, backbone_weights="imagenet", backbone_style="keras").alpha == 0.35


def test_inconsistent_settings_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("grid_size = 5\n")
    with pytest.raises(SettingsError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: grid_size 5 does not fit input_size 224: choose one of [7, 14, 28] (input_size / 32, / 16 or / 8)"
    )
    path.write_text("input_size = 320\ngrid_size = 10\n")
    with pytest.raises(SettingsError) as info:
        load_config(path, grid_size=7, seed=None)
    assert str(info.value).startswith(f"{path}: grid_size 7 does not fit input_size 320")
    assert str(info.value).endswith("(with grid_size = 7)")
