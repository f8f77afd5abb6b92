"""Detection: decoding to original pixels with NMS, the detect and evaluate commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from facegrid.cli import main
from facegrid.core.codec import PyramidCodec
from facegrid.core.config import Config
from facegrid.core.resources import bundled_int8_model_path, bundled_model_path, default_model_path
from facegrid.core.scores import ScoreCalibration
from facegrid.infer.detector import Detector
from facegrid.model.network import build_detector
from facegrid.wider.annotations import read_annotations
from facegrid.wider.results import read_submission, write_image_result

TINY = Config(input_size=64, grid_size=4, alpha=0.35, backbone_weights="none", backbone_style="keras", head_channels=8)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained detector saved with its configuration beside it.

    Its objectness bias is raised from the 0.01 prior to about 0.5, so that it
    reports boxes above and below the thresholds the tests use.
    """
    folder = tmp_path_factory.mktemp("model")
    model = build_detector(TINY)
    kernel, bias = model.get_layer("grid_raw").get_weights()
    bias[0] = 0.0
    model.get_layer("grid_raw").set_weights([kernel, bias])
    model.save(folder / "tiny.keras")
    TINY.save(folder / "tiny.toml")
    return folder / "tiny.keras"


def test_decode_maps_cells_to_original_pixels_and_suppresses_duplicates():
    detector = Detector(model=None, input_size=64, score_threshold=0.5, nms_iou=0.4)
    grid = np.zeros((4, 4, 5), np.float32)
    grid[1, 2] = [0.9, 0.5, 0.5, 0.5, 0.5]  # centre (2.5/4, 1.5/4) of a 400 x 200 image
    grid[1, 3] = [0.7, 0.0, 0.5, 0.5, 0.5]  # a neighbour's near-duplicate: IoU 0.6
    grid[3, 0] = [0.3, 0.5, 0.5, 0.1, 0.1]  # below the threshold
    boxes, scores = detector.decode(grid, 400, 200)
    np.testing.assert_allclose(boxes, [[150.0, 25.0, 350.0, 125.0]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9])


def test_a_calibrated_detector_reports_confidences_and_thresholds_in_them():
    grid = np.zeros((4, 4, 5), np.float32)
    grid[..., 1:] = 0.5
    grid[..., 3:] = 0.2  # small boxes: no two overlap
    grid[..., 0] = np.linspace(0.05, 0.95, 16).reshape(4, 4)
    calibration = ScoreCalibration(3.0, 1.5)
    calibrated = Detector(model=None, input_size=64, score_threshold=0.4, calibration=calibration)
    raw = Detector(model=None, input_size=64, score_threshold=calibration.raw(0.4))
    boxes, scores = calibrated.decode(grid, 400, 400)
    raw_boxes, raw_scores = raw.decode(grid, 400, 400)
    np.testing.assert_array_equal(boxes, raw_boxes)  # the same boxes: the threshold means the same raw score
    np.testing.assert_allclose(scores, calibration(raw_scores))
    assert scores.min() >= 0.4 and len(scores) == int((grid[..., 0] >= calibration.raw(0.4)).sum())
    floored, _ = calibrated.floored(0.01).decode(grid, 400, 400)  # a submission's floor is on raw scores
    assert len(floored) == 16 and calibrated.score_threshold == 0.4  # the detector itself unchanged


def test_decoded_boxes_are_clipped_to_the_image():
    detector = Detector(model=None, input_size=64)
    grid = np.zeros((2, 2, 5), np.float32)
    grid[0, 0] = [1.0, 0.1, 0.1, 0.9, 0.9]
    boxes, _ = detector.decode(grid, 100, 50)
    assert boxes.min() >= 0 and boxes[0, 2] <= 100 and boxes[0, 3] <= 50


def test_detect_reports_original_sizes(tiny_model, samples):
    detector = Detector.load(tiny_model, score_threshold=0.0)
    assert detector.input_size == 64  # from tiny.toml
    found = detector.detect(sorted((samples / "images").rglob("*.*")), batch_size=3)
    assert [d.size for d in found] == [(640, 427), (512, 512), (512, 512), (512, 600)]
    for d in found:
        width, height = d.size
        assert d.boxes.shape[1] == 4 and len(d.boxes) == len(d.scores) > 0
        assert (d.boxes[:, [0, 2]] <= width).all() and (d.boxes[:, [1, 3]] <= height).all()
        assert (np.diff(d.scores) <= 0).all()


def test_detection_thresholds_come_from_the_models_settings_unless_given(tiny_model, tmp_path, samples):
    strict = tmp_path / "strict.keras"
    strict.write_bytes(tiny_model.read_bytes())
    TINY.replace(score_threshold=0.9, nms_iou=0.2).save(tmp_path / "strict.toml")
    detector = Detector.load(strict)
    assert (detector.score_threshold, detector.nms_iou) == (0.9, 0.2)
    assert Detector.load(strict, score_threshold=0.3, nms_iou=0.5).score_threshold == 0.3
    photo = samples / "images" / "portraits" / "astronaut.png"
    shown = CliRunner().invoke(main, ["detect", str(photo), "--model", str(strict), "--json"])
    assert shown.exit_code == 0, shown.output
    assert all(face["score"] >= 0.9 for face in json.loads(shown.stdout)["faces"])
    loose = CliRunner().invoke(main, ["detect", str(photo), "--model", str(strict), "--json", "--threshold", "0"])
    assert len(json.loads(loose.stdout)["faces"]) > len(json.loads(shown.stdout)["faces"])


def test_detect_command_writes_images_json_and_wider_submission(tiny_model, samples, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "detect",
            str(samples / "images"),
            "--model",
            str(tiny_model),
            "--json",
            "--threshold",
            "0.9",
            "--out",
            str(tmp_path / "out"),
            "--wider-submission",
            str(tmp_path / "sub"),
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["width"] for r in records] == [640, 512, 512, 512]
    assert all(face["score"] >= 0.9 for r in records for face in r["faces"])
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg")) == [
        "background/rocket.jpg",
        "portraits/astronaut.png.jpg",
        "portraits/camera.png.jpg",
        "portraits/grace_hopper.jpg",
    ]
    submission = read_submission(tmp_path / "sub")
    assert sorted(submission) == [
        "background/rocket",
        "portraits/astronaut",
        "portraits/camera",
        "portraits/grace_hopper",
    ]
    # The submission keeps low-score boxes, down to 0.01, for the whole PR curve.
    assert min(scores.min() for _, scores in submission.values()) < 0.9

    scored = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "sub"), "--annotations", str(samples / "faces_bbx_gt.txt"), "--json"]
    )
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.output)
    assert report["faces"] == 3 and 0.0 <= report["ap"] <= 1.0


def test_detect_command_stops_at_an_unreadable_image_or_skips_it(tiny_model, samples, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    good = samples / "images" / "portraits" / "astronaut.png"
    stopped = CliRunner().invoke(main, ["detect", str(bad), str(good), "--model", str(tiny_model)])
    assert stopped.exit_code == 2
    assert "error:" in stopped.output and "bad.jpg: not a readable image" in stopped.output
    skipped = CliRunner().invoke(
        main, ["detect", str(bad), str(good), "--model", str(tiny_model), "--on-bad-image", "skip"]
    )
    assert skipped.exit_code == 1
    assert "skipped" in skipped.output and "bad.jpg" in skipped.output
    assert "astronaut.png: " in skipped.output  # the readable image is still processed


def test_detect_command_gives_each_image_its_own_annotated_copy(tiny_model, samples, tmp_path):
    photo = samples / "images" / "background" / "rocket.jpg"
    for folder, name in (("a", "1.jpg"), ("b", "1.jpg"), ("b", "1.png")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(photo.read_bytes())
    args = [
        "detect",
        str(tmp_path / "a" / "1.jpg"),
        str(tmp_path / "b"),
        "--model",
        str(tiny_model),
        "--out",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [line.split(" -> ")[1] for line in result.stdout.splitlines()] == [
        str(tmp_path / "out" / name) for name in ("1.jpg", "1-2.jpg", "1.png.jpg")
    ]
    again = CliRunner().invoke(main, args)  # the copies exist now: nothing is replaced unless asked
    assert (
        again.exit_code == 2
        and again.stderr == f"error: {tmp_path / 'out' / '1.jpg'}: exists: pass --overwrite to replace it\n"
    )
    assert CliRunner().invoke(main, args + ["--overwrite"]).stdout == result.stdout  # the same names again


def test_evaluate_command_ground_truth_fed_back_scores_one(wider, tmp_path):
    index = read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt")
    for i, path in enumerate(index.paths.tolist()):
        boxes = index.image_boxes(i)
        write_image_result(tmp_path, path, boxes, np.linspace(1.0, 0.5, len(boxes), dtype=np.float32))
    plot = tmp_path / "pr.png"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(tmp_path),
            "--ground-truth",
            str(wider / "eval_tools" / "ground_truth"),
            "--plot",
            str(plot),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 394
    assert report["ap"] == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0})
    assert plot.stat().st_size > 10_000


def test_evaluate_command_needs_one_reference(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one" in result.output


def test_pyramid_decode_maps_cells_through_the_fitted_input_to_original_pixels():
    codec = PyramidCodec((8, 16, 32))
    detector = Detector(model=None, input_size=320, score_threshold=0.5, nms_iou=0.4, codec=codec)
    # a 1000 x 500 image fitted into 320 x 160 (scale 0.32), padded to 320 x 160
    face = np.array([[100, 50, 164, 114]], np.float32)  # input pixels: a 64 px face, level 16
    cells = codec.encode(face, 320, 160)
    cells[cells[:, 0] == 1, 0] = np.linspace(0.9, 0.6, int((cells[:, 0] == 1).sum()))
    boxes, scores = detector.decode(cells, 1000, 500, input_size=(320, 160), fitted=(320, 160))
    np.testing.assert_allclose(boxes, face / 0.32, rtol=1e-5)  # the duplicates from its other cells suppressed
    np.testing.assert_allclose(scores, [0.9])


def test_pyramid_detector_keeps_the_aspect_ratio(tmp_path, samples):
    config = TINY.replace(strides=(8, 16, 32), grid_size=0, detect_size=96)
    model = build_detector(config)
    model.save(tmp_path / "pyramid.keras")
    config.save(tmp_path / "pyramid.toml")
    detector = Detector.load(tmp_path / "pyramid.keras", score_threshold=0.0)
    assert detector.input_size == 96 and detector.codec == config.codec
    seen = []
    detector.predict_grids = lambda pixels: seen.append(pixels.shape) or model.predict_on_batch(pixels)
    path = samples / "images" / "portraits" / "grace_hopper.jpg"  # 512 x 600 (portrait)
    (found,) = detector.detect([path])
    assert seen == [(1, 96, 96, 3)]  # fitted to 82 x 96, padded to a multiple of 32
    assert found.size == (512, 600) and len(found.boxes)
    assert found.boxes[:, 2].max() <= 512 and found.boxes[:, 3].max() <= 600
    (tmp_path / "pyramid.toml").unlink()
    with pytest.raises(ValueError, match="strides"):
        Detector.load(tmp_path / "pyramid.keras")


@pytest.mark.parametrize("model", ["keras", "int8"])
def test_bundled_model_finds_each_sample_face_once_and_nothing_on_the_rocket(samples, model):
    from facegrid.core import boxes as box_ops

    path = bundled_model_path() if model == "keras" else bundled_int8_model_path()
    detector = Detector.load(path)  # at its own detection size and threshold
    assert detector.codec is not None and detector.input_size == 416
    index = read_annotations(samples / "faces_bbx_gt.txt")
    found = detector.detect([samples / "images" / p for p in index.paths.tolist()])
    for k, result in enumerate(found):
        truth = index.image_boxes(k)
        assert len(result.boxes) == len(truth), result.path  # every face once, the rocket empty
        if len(truth):  # a clear face found, with a score that reads as confidence
            assert box_ops.iou(result.boxes, truth).max() >= 0.5 and result.scores.min() >= 0.8, result.path


def test_size_sets_the_detection_size_and_v_says_the_runtime(tiny_pyramid, samples):
    import os
    import subprocess
    import sys

    photo = samples / "images" / "portraits" / "astronaut.png"
    model = tiny_pyramid / "tiny.tflite"
    done = subprocess.run(
        [sys.executable, "-m", "facegrid.cli", "-v", "detect", "--model", str(model), "--size", "96", str(photo)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{model}: LiteRT, detecting at 96 pixels (longer side), score threshold 0.5" in done.stderr
    assert Detector.load(model, input_size=96).input_size == 96
    for command in (["detect", str(photo)], ["val", str(model), "--data", str(samples)]):
        refused = CliRunner().invoke(main, [*command, "--size", "100"])
        assert refused.exit_code == 2
        assert "Invalid value for '--size': must be a multiple of 32, got 100" in refused.stderr, refused.output
    with pytest.raises(ValueError, match="the detection size must be a multiple of 32, got 40"):
        Detector.load(model, input_size=40)


def test_detection_runs_the_int8_bundled_model_where_litert_is_installed(monkeypatch):
    import importlib.util

    import facegrid.core.resources

    assert default_model_path() == bundled_int8_model_path()  # the test environment has LiteRT
    assert Detector.load().model.RUNTIME == "LiteRT"
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        facegrid.core.resources.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "ai_edge_litert" else find_spec(name, *args),
    )
    assert default_model_path() == bundled_model_path()
