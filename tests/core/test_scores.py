"""Score calibration: the monotone map from a network's raw scores to confidences, and its setting."""

from __future__ import annotations

import numpy as np
import pytest

from facegrid.core.config import Config, load_config
from facegrid.core.errors import SettingsError
from facegrid.core.scores import RAW_SCORES, ScoreCalibration


def test_raw_scores_stay_as_they_are():
    raw = np.array([0.0, 0.01, 0.35, 0.5, 0.99, 1.0], np.float32)
    np.testing.assert_allclose(RAW_SCORES(raw), raw, atol=1e-7)
    assert Config().calibration == RAW_SCORES


def test_a_calibration_is_monotone_and_its_threshold_inverts_it():
    calibration = ScoreCalibration(3.0, 1.5)
    raw = np.linspace(0, 1, 1001)
    confidence = calibration(raw)
    assert confidence[0] == 0.0 and confidence[-1] == 1.0 and np.all(np.diff(confidence) >= 0)
    assert calibration([0.5])[0] == pytest.approx(1 / (1 + np.exp(-1.5)))  # logit(0.5) = 0: the offset alone
    for score in (0.001, 0.01, 0.35, 0.7, 0.999):
        assert calibration.raw(calibration.confidence(score)) == pytest.approx(score, rel=1e-6)
    assert calibration.raw(0.0) == 0.0 and calibration.raw(1.0) == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((0.0, 1.0), "slope must be a positive number, got 0.0"),
        ((-2.0, 0.0), "slope must be a positive number, got -2.0"),
        ((1.0, float("inf")), "offset must be a finite number, got inf"),
        ((1.0,), r"score_calibration must be \[slope, offset\], got \[1.0\]"),
    ],
)
def test_an_unsound_calibration_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        Config(score_calibration=values)


def test_a_settings_file_carries_the_calibration(tmp_path):
    Config(score_calibration=(3.0369, 1.5031)).save(tmp_path / "model.toml")
    assert load_config(tmp_path / "model.toml").calibration == ScoreCalibration(3.0369, 1.5031)
    (tmp_path / "bad.toml").write_text("score_calibration = [0, 1]\n")
    with pytest.raises(SettingsError, match="bad.toml: .*slope must be a positive number"):
        load_config(tmp_path / "bad.toml")
