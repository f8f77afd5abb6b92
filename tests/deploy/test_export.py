"""Exports: every format of the bundled model agrees with Keras on real photos, and runs without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from facegrid.cli import main
from facegrid.core import boxes as box_ops
from facegrid.core.config import Config, load_config, settings_path
from facegrid.core.errors import ExportError, ModelFileError
from facegrid.core.resources import bundled_model_path
from facegrid.deploy.export import export_model, export_models, format_for, pick_calibration_images
from facegrid.infer.detector import Detector
from facegrid.infer.inputs import find_images
from facegrid.infer.runtimes import pyramid_cells

#: Float exports against Keras, raw outputs: scores absolutely, centre offsets (strides) absolutely, sizes relatively.
FLOAT_SCORE_TOLERANCE = 1e-4
FLOAT_OFFSET_TOLERANCE = 1e-3
FLOAT_SIZE_TOLERANCE = 1e-3

#: int8 against Keras, face by face (those scoring 0.1 or more above the threshold): each found again with at
#: least this IoU, its score this close (measured here: lowest IoU 0.80, on a face two boxes compete for in
#: 0_Parade_Parade_0_102.jpg, all others 0.87 or more; largest score difference 0.016).
INT8_MIN_IOU = 0.75
INT8_MAX_SCORE_DIFFERENCE = 0.05

TINY_PYRAMID = Config(
    input_size=64,
    strides=(8, 16, 32),
    grid_size=0,
    alpha=0.35,
    backbone_weights="none",
    backbone_style="keras",
    head_channels=8,
    detect_size=96,
)


@pytest.fixture(scope="module")
def photos(samples, wider):
    """Real photos to compare on: the bundled samples and 12 WIDER val images."""
    val = sorted((wider / "WIDER_val" / "images").rglob("*.jpg"))[::40][:12]
    return [path for path, _ in find_images([samples / "images"])] + val


@pytest.fixture(scope="session")
def exports(tmp_path_factory, wider):
    """The bundled model exported to every format in one call (int8 calibrated on 32 WIDER train images).

    Session-scoped: a parallel run may hand this file's tests to its worker in
    several parts, and a module fixture would be exported anew for each.
    """
    folder = tmp_path_factory.mktemp("exports")
    train = [path for path, _ in find_images([wider / "WIDER_train" / "images"])]
    formats = {"saved_model": "saved", "litert": "float.tflite", "onnx": "float.onnx", "litert-int8": "int8.tflite"}
    made = export_models(
        bundled_model_path(),
        [(folder / name, format) for format, name in formats.items()],
        calibration=train,
        calibration_images=32,
    )  # one conversion shared by all four
    return dict(zip(formats, made, strict=True))


@pytest.fixture(scope="module")
def keras_detector():
    return Detector.load(bundled_model_path())


def _outputs(detector, photos):
    return [detector.predict_grids(detector.prepare([path])[0])[0] for path in photos]


@pytest.fixture(scope="module")
def keras_results(keras_detector, photos):
    """The Keras model's raw outputs and detections on the photos, computed once for every export compared."""
    return _outputs(keras_detector, photos), keras_detector.detect(photos, batch_size=1)


@pytest.mark.parametrize("format", ["saved_model", "litert", "onnx"])
def test_float_exports_match_keras_on_real_photos(format, exports, photos, keras_detector, keras_results):
    exported = Detector.load(exports[format])
    assert exported.input_size == keras_detector.input_size == 416 and exported.codec == keras_detector.codec
    keras_outputs, keras_found = keras_results
    for path, want, got in zip(photos, keras_outputs, _outputs(exported, photos)):
        assert got.shape == want.shape, path
        np.testing.assert_allclose(got[:, 0], want[:, 0], atol=FLOAT_SCORE_TOLERANCE, err_msg=str(path))
        np.testing.assert_allclose(got[:, 1:3], want[:, 1:3], atol=FLOAT_OFFSET_TOLERANCE, err_msg=str(path))
        np.testing.assert_allclose(got[:, 3:], want[:, 3:], rtol=FLOAT_SIZE_TOLERANCE, err_msg=str(path))
    for want, got in zip(keras_found, exported.detect(photos, batch_size=1)):
        assert len(got.boxes) == len(want.boxes), want.path
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.5)


def test_int8_export_finds_the_same_faces(exports, photos, keras_detector, keras_results):
    int8 = Detector.load(exports["litert-int8"])
    calibration = keras_detector.calibration
    assert int8.calibration == calibration  # the settings travel with the export

    def raw(scores):  # the network's own scores, which quantisation moves, before the calibration
        return np.array([calibration.raw(score) for score in scores])

    faces = 0
    for want, got in zip(keras_results[1], int8.detect(photos)):
        strong = raw(want.scores) >= calibration.raw(keras_detector.score_threshold) + 0.1  # clear of the threshold
        if not strong.any():
            continue
        iou = box_ops.iou(want.boxes[strong], got.boxes) if len(got.boxes) else np.zeros((strong.sum(), 1))
        best = iou.argmax(axis=1)
        assert (iou.max(axis=1) >= INT8_MIN_IOU).all(), (want.path, iou.max(axis=1))
        difference = np.abs(raw(got.scores[best]) - raw(want.scores[strong]))
        assert difference.max() <= INT8_MAX_SCORE_DIFFERENCE, want.path
        faces += int(strong.sum())
    assert faces >= 20  # the comparison covered real faces
    assert exports["litert-int8"].stat().st_size < exports["litert"].stat().st_size / 3


def test_exports_carry_their_settings_and_runtime_cells_follow_the_keras_layer(exports):
    for path in exports.values():
        assert load_config(settings_path(path)) == load_config(settings_path(bundled_model_path()))
    raw = [np.random.default_rng(s).normal(0, 3, (2, 96 // s, 64 // s, 5)).astype(np.float32) for s in (8, 16, 32)]
    from facegrid.model.network import PyramidCells

    want = np.asarray(PyramidCells()([keras.ops.convert_to_tensor(r) for r in raw]))
    outputs = {}
    for stride, level in zip((8, 16, 32), raw):
        outputs[f"scores_{stride}"] = 1 / (1 + np.exp(-level[..., :1]))
        outputs[f"boxes_{stride}"] = level[..., 1:]
    np.testing.assert_allclose(pyramid_cells(outputs, (8, 16, 32)), want, rtol=1e-5, atol=1e-6)


def test_detection_from_exports_never_imports_tensorflow(exports, samples):
    """The LiteRT and ONNX paths, the default model's among them, run with TensorFlow, Keras and tf2onnx made
    impossible to import."""
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "absl"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Refuse())
        from facegrid.cli import main
        for model in ({str(exports["litert-int8"])!r}, {str(exports["onnx"])!r}, None):  # None: the default
            try:
                main(["detect", *(["--model", model] if model else []), {str(samples / "images")!r}, "--json"])
            except SystemExit as done:
                assert done.code == 0, done.code
        print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "imported: []"
    records = [json.loads(line) for line in lines[:-1]]
    faces = [(r["path"].split("/")[-1], len(r["faces"])) for r in records]
    assert len(records) == 12, faces
    assert {n for name, n in faces if name == "rocket.jpg"} == {0} and {
        n for name, n in faces if name == "astronaut.png"
    } == {1}, faces


def test_fixed_size_export_takes_one_square_input(tmp_path, samples, tiny_pyramid):
    out = export_model(tiny_pyramid / "tiny.keras", tmp_path / "fixed.tflite", fixed_size=128)
    detector = Detector.load(out, score_threshold=0.0)
    assert detector.model.fixed_size == (128, 128) and detector.input_size == 128
    assert "detect_size = 128" in settings_path(out).read_text()
    pixels = detector.prepare([samples / "images" / "portraits" / "grace_hopper.jpg"])[0]
    assert pixels.shape == (1, 128, 128, 3)  # fitted to 109 x 128, padded to the square
    keras_cells = Detector.load(tiny_pyramid / "tiny.keras", input_size=128).model.predict_on_batch(pixels)
    np.testing.assert_allclose(detector.predict_grids(pixels)[..., 0], keras_cells[..., 0], atol=FLOAT_SCORE_TOLERANCE)
    with pytest.raises(ValueError, match="128 x 128"):
        Detector.load(out, input_size=160)


def test_export_refuses_to_overwrite_and_names_its_format(tmp_path, tiny_pyramid):
    with pytest.raises(ValueError, match="name its format"):
        format_for(tmp_path / "model.bin")
    with pytest.raises(ValueError, match=r"\.tflite"):
        format_for(tmp_path / "model.onnx", "litert-int8")
    assert format_for(tmp_path / "m.tflite") == "litert" and format_for(tmp_path / "sm", "saved_model") == "saved_model"
    for name in ("tiny.keras", "tiny.toml"):
        shutil.copy(tiny_pyramid / name, tmp_path)
    (tmp_path / "out.keras").write_bytes(b"mine")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "tiny.keras"), str(tmp_path / "out.keras")])
    assert (
        result.exit_code == 2
        and result.stderr == f"error: {tmp_path / 'out.keras'}: exists: pass --overwrite to replace it\n"
    )
    assert (tmp_path / "out.keras").read_bytes() == b"mine"
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "tiny.keras"), str(tmp_path / "q.tflite"), "--format", "litert-int8"]
    )
    assert result.exit_code == 2 and "calibration images" in result.output and not (tmp_path / "q.tflite").exists()


@keras.saving.register_keras_serializable(package="facegrid_tests")
class SingularValues(keras.layers.Layer):
    """A layer LiteRT's built-in operators cannot express (an SVD)."""

    def call(self, x):
        values = keras.ops.svd(keras.ops.transpose(x, (0, 3, 1, 2)), compute_uv=False)
        return x + keras.ops.mean(values)


def test_an_export_that_fails_says_why_in_one_line(tmp_path):
    config = Config(
        input_size=64, grid_size=2, alpha=0.35, backbone_weights="none", backbone_style="keras", head_channels=8
    )
    inputs = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(5, 32, strides=32, activation="sigmoid")(x)
    keras.Model(inputs, SingularValues(name="grid")(x)).save(tmp_path / "odd.keras")
    config.save(tmp_path / "odd.toml")
    with pytest.raises(ExportError, match="litert export failed: .*Svd"):
        export_model(tmp_path / "odd.keras", tmp_path / "out.tflite")
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "odd.keras"), str(tmp_path / "out.keras"), str(tmp_path / "out.tflite")]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "Svd" in result.output, result.output
    # nothing half-written left, and of several outputs none once one failed (out.keras converts first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.keras", "odd.toml"]
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "odd.keras"), str(tmp_path / "a.keras"), str(tmp_path / "b.keras"),
               "--format", "keras"]
    )  # fmt: skip
    assert result.exit_code == 2 and "give one --format per OUT (2), or none; got 1" in result.output


def test_unusable_exported_models_are_refused_in_one_line(tmp_path, samples):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    TINY_PYRAMID.save(tmp_path / "broken.toml")
    with pytest.raises(ModelFileError, match="not a LiteRT model"):
        Detector.load(broken)
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"\x00")
    result = CliRunner().invoke(main, ["detect", "--model", str(bare), str(samples / "images")])
    assert result.exit_code == 2 and "no settings beside it" in result.output and result.output.count("\n") == 1


def test_settings_of_another_model_are_refused_when_the_model_loads(tmp_path, samples, tiny_pyramid):
    for name in ("tiny.keras", "tiny.toml", "tiny.tflite"):
        shutil.copy(tiny_pyramid / name, tmp_path)
    coarser = load_config(tmp_path / "tiny.toml").replace(strides=(32,))  # another model's settings: fewer levels
    for name in ("tiny.keras", "tiny.tflite"):
        shutil.copy(tmp_path / name, tmp_path / f"other{Path(name).suffix}")
    coarser.save(tmp_path / "other.toml")
    with pytest.raises(
        ModelFileError,
        match=r"other.tflite: outputs boxes_16, boxes_32, scores_16, scores_32, "
        r"but its settings say a pyramid of strides \[32\]",
    ):
        Detector.load(tmp_path / "other.tflite")
    with pytest.raises(
        ModelFileError,
        match=r"other.keras: is a pyramid of strides \[16, 32\], but its settings "
        r"\(other.toml or config.toml\) say a pyramid of strides \[32\]",
    ):
        Detector.load(tmp_path / "other.keras")
    with pytest.raises(ModelFileError, match="another model's"):
        export_model(tmp_path / "other.keras", tmp_path / "again.keras")
    for name in ("other.tflite", "other.keras"):
        result = CliRunner().invoke(main, ["detect", str(samples / "images"), "--model", str(tmp_path / name)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "another model's" in result.stderr
    assert Detector.load(tmp_path / "tiny.tflite").model.strides == (16, 32)  # its own settings load


def test_calibration_images_are_drawn_reproducibly(tmp_path):
    images = [tmp_path / f"{k:03d}.jpg" for k in range(50)]
    picked = pick_calibration_images(images, 10)
    assert picked == pick_calibration_images(list(reversed(images)), 10) and len(set(picked)) == 10
    assert pick_calibration_images(images[:5], 10) == images[:5]


def test_an_onnx_output_left_with_a_leading_unit_axis_gets_its_layout_back():
    """tf2onnx can leave a score output as ``[1, B, H, W, 1]`` (depending on string hashing): squeezed back."""
    import onnx
    import onnxruntime

    from facegrid.deploy.export import _drop_leading_unit_axes

    helper, tensor = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["image", "axes"], ["scores_8"]), helper.make_node("Relu", ["image"], ["b"])],
        "unit_axis",
        [helper.make_tensor_value_info("image", tensor, ["B", "H", "W", 1])],
        [
            helper.make_tensor_value_info("scores_8", tensor, [1, "B", "H", "W", 1]),
            helper.make_tensor_value_info("b", tensor, ["B", "H", "W", 1]),
        ],
        [helper.make_tensor("axes", onnx.TensorProto.INT64, [1], [0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _drop_leading_unit_axes(model)
    onnx.checker.check_model(model)
    assert [len(output.type.tensor_type.shape.dim) for output in model.graph.output] == [4, 4]
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).normal(size=(2, 3, 5, 1)).astype(np.float32)
    scores, _ = session.run(["scores_8", "b"], {"image": image})
    np.testing.assert_array_equal(scores, image)
