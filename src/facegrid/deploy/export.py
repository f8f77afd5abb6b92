"""Export a trained detector for deployment: Keras, SavedModel, LiteRT (float or int8) or ONNX.

Every export writes the model and ``NAME.toml`` beside it: the detector's
settings, from which :meth:`facegrid.infer.detector.Detector.load` takes the layout,
the detection size and the thresholds. A checkpoint from a run
(``last.keras``, ``best.keras``) also carries the optimizer's state, three
times the size of the network; no export keeps it.

The non-Keras formats hold the graph of :mod:`facegrid.infer.runtimes`: uint8 pixels
in, and for a pyramid one score and one box output per stride, the final
``exp`` of the sizes left to the runtime. Each pyramid head's last
convolution is split in two (score, box) with the same weights, so an int8
model quantises scores and boxes on scales of their own.

int8 (``litert-int8``) is post-training quantisation: weights and
activations int8, the activation ranges calibrated on real training images
prepared as at detection, except for :data:`INT8_FLOAT_LAYERS` and each
head's last convolution, which stay float; uint8 input, float outputs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from facegrid.core.config import (
    Config,
    check_input_side,
    load_config,
    model_config,
    model_settings_file,
    settings_path,
)
from facegrid.core.errors import ExportError, PathError, SettingsError
from facegrid.core.files import check_outputs
from facegrid.infer.runtimes import GRID_OUTPUT, INPUT_NAME, box_output, score_output

log = logging.getLogger(__name__)

#: Each format and the suffix its file must have ("" for a folder).
FORMATS = {"keras": ".keras", "saved_model": "", "litert": ".tflite", "litert-int8": ".tflite", "onnx": ".onnx"}

#: Layers an int8 export keeps in float, besides each head's last convolution: the input scaling and the
#: first convolution and depthwise block. Measured on the bundled model (TensorFlow's quantisation
#: debugger, WIDER train images): the first depthwise block's int8 error is 2.3 times the rounding floor
#: that nearly every other layer sits at. On 200 WIDER val images at 320, all-int8 lost 0.005 / 0.015 /
#: 0.006 AP (easy / medium / hard) against float; with these in float it lost nothing, and ran faster.
INT8_FLOAT_LAYERS = ("to_unit_range", "torchvision_normalize", "Conv1", "bn_Conv1", "expanded_conv_depthwise")

#: ONNX operator set of ONNX exports (ONNX Runtime 1.16 and newer run it).
ONNX_OPSET = 17

#: Calibration images for int8, by default.
CALIBRATION_IMAGES = 200


def format_for(out: str | os.PathLike, format: str | None = None) -> str:
    """The export format: ``format`` if given (checked against ``out``'s suffix), else the one ``out``'s suffix names.

    Raises:
        ValueError: an unknown format, a suffix that does not fit it, or a
            suffix naming no format (int8 and SavedModel are asked for by name).
    """
    out = Path(out)
    if format is None:
        by_suffix = {".keras": "keras", ".tflite": "litert", ".onnx": "onnx"}
        if out.suffix not in by_suffix:
            raise ValueError(f"{out}: name its format, or end the name in .keras, .tflite or .onnx")
        return by_suffix[out.suffix]
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    if FORMATS[format] and out.suffix != FORMATS[format]:
        raise ValueError(f"{out}: a {format} export's name must end in {FORMATS[format]}")
    if not FORMATS[format] and out.suffix in (".keras", ".tflite", ".onnx", ".toml"):
        raise ValueError(f"{out}: a SavedModel is a folder; its name must not end in {out.suffix}")
    return format


def deployable_graph(model, config: Config):
    """The graph of the non-Keras formats (:mod:`facegrid.infer.runtimes`): named outputs, the last ``exp`` left out."""
    import keras

    if not config.strides:
        return keras.Model(model.inputs, {GRID_OUTPUT: model.output}, name="facegrid_grid")
    outputs = {}
    for stride in config.strides:
        head = model.get_layer(f"cells{stride}")
        kernel, bias = head.get_weights()
        score = keras.layers.Conv2D(1, 1, name=f"score{stride}")
        box = keras.layers.Conv2D(4, 1, name=f"box{stride}")
        features = head.input
        scores, boxes = score(features), box(features)
        score.set_weights([kernel[..., :1], bias[:1]])
        box.set_weights([kernel[..., 1:], bias[1:]])
        outputs[score_output(stride)] = keras.layers.Activation("sigmoid", name=f"sigmoid{stride}")(scores)
        outputs[box_output(stride)] = boxes
    return keras.Model(model.inputs, outputs, name="facegrid_pyramid_export")


def _converter_reason(error: BaseException) -> str:
    """A converter's message reduced to the line that says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower():
            return line
    return lines[0] if lines else type(error).__name__


def _calibration_batches(detector, images: list[Path], fixed: int | None):
    for path in images:
        pixels = detector.prepare([path])[0]
        if fixed:
            pixels = np.pad(pixels, ((0, 0), (0, fixed - pixels.shape[1]), (0, fixed - pixels.shape[2]), (0, 0)))
        yield [pixels]


def pick_calibration_images(images: list[Path], count: int, seed: int = 0) -> list[Path]:
    """``count`` of ``images`` (all if fewer), drawn reproducibly from ``seed``."""
    images = sorted(map(Path, images))
    if len(images) <= count:
        return images
    chosen = np.random.default_rng(seed).choice(len(images), count, replace=False)
    return [images[k] for k in sorted(chosen)]


def _float_layers(float_model: bytes, strides: tuple[int, ...]) -> list[str]:
    """Tensors an int8 export keeps float: :data:`INT8_FLOAT_LAYERS`', the heads' last convolutions', the outputs."""
    from ai_edge_litert.interpreter import Interpreter

    layers = INT8_FLOAT_LAYERS + tuple(f"{kind}{stride}_" for stride in strides for kind in ("score", "box"))
    names = [tensor["name"] for tensor in Interpreter(model_content=float_model).get_tensor_details()]
    return sorted(n for n in names if n.startswith("StatefulPartitionedCall") or any(f"/{m}" in n for m in layers))


def _float_litert(saved_model: Path) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()


def _int8_litert(saved_model: Path, float_model: bytes, strides: tuple[int, ...], calibration) -> bytes:
    import tensorflow as tf

    int8 = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))  # the graph's input is uint8 already
    int8.optimizations = [tf.lite.Optimize.DEFAULT]
    int8.representative_dataset = calibration
    int8.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    # TensorFlow's selective quantisation: its debugger calibrates, then quantises all but the denylisted
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=_float_layers(float_model, strides))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it checks with tf.lite.Interpreter, which warns of its deprecation
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=int8, debug_dataset=calibration, debug_options=options
        )
        return debugger.get_nondebug_quantized_model()


def _write_onnx(saved_model: Path, out: Path) -> None:
    # From the SavedModel, frozen, as tf2onnx's own command line does: Keras' direct ONNX export
    # leaves constants captured by a layer (the torchvision-style input normalisation) as extra inputs
    from tf2onnx import convert, tf_loader

    # tf2onnx logs its defaults (tag, signature) and TensorFlow the deprecation of the TF1-era freezing
    # it uses, as warnings; facegrid chose both, so they go to the debug log
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR if not log.isEnabledFor(logging.DEBUG) else logging.DEBUG)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph_def, inputs, outputs, names = tf_loader.from_saved_model(
                str(saved_model), None, None, return_tensors_to_rename=True
            )
            converted, _ = convert.from_graph_def(
                graph_def, input_names=inputs, output_names=outputs, opset=ONNX_OPSET, tensors_to_rename=names
            )
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    _drop_leading_unit_axes(converted)
    out.write_bytes(converted.SerializeToString())


def _drop_leading_unit_axes(model) -> None:
    """Give back its ``[B, H, W, C]`` layout to an output tf2onnx left with an extra leading axis of 1.

    tf2onnx turns a one-channel convolution's output to channels-last by a
    reshape to five axes and a squeeze, and its merging of duplicated nodes
    can hand one level's reshape another level's shape and drop the squeeze:
    which output, if any, depends on Python's string hashing, so one export
    in several had a ``[1, B, H, W, 1]`` score output. The squeeze is put back.
    """
    import onnx

    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) != 5 or dims[0].dim_value != 1:
            continue
        inner, axes = f"{output.name}__with_unit_axis", f"{output.name}__unit_axis"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        model.graph.initializer.append(onnx.helper.make_tensor(axes, onnx.TensorProto.INT64, [1], [0]))
        model.graph.node.append(onnx.helper.make_node("Squeeze", [inner, axes], [output.name]))
        del dims[0]


def export_model(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    format: str | None = None,
    detect_size: int | None = None,
    fixed_size: int | None = None,
    calibration: list[Path] = (),
    calibration_images: int = CALIBRATION_IMAGES,
    overwrite: bool = False,
) -> Path:
    """Write ``out`` in ``format`` and its settings ``out.toml`` from a facegrid ``.keras`` model.

    Args:
        model_path: a ``.keras`` model with its settings beside it (a run
            folder's checkpoint, an exported or the bundled model).
        out: the exported model's path (a folder for a SavedModel).
        format: one of :data:`FORMATS`; default: the one ``out``'s suffix names.
        detect_size: detection input size to record; default: the model's.
        fixed_size: export for ``S x S`` inputs and a batch of one (what
            mobile accelerators need); images are fitted into that square.
            Default: any input size and batch (not for ``keras``).
        calibration: images for int8 calibration (``litert-int8`` needs them;
            use training images).
        calibration_images: how many of ``calibration`` to use, drawn reproducibly.
        overwrite: replace ``out`` and its settings file if they exist.

    Returns:
        The path written.

    Raises:
        ValueError: inconsistent arguments.
        facegrid.core.errors.OutputExistsError: ``out`` or its settings file exists, and not ``overwrite``.
        facegrid.core.errors.OverwritesInputError: ``out`` or its settings file is ``model_path``'s own.
        ExportError: the converter failed (its reason in one line).
        facegrid.core.errors.ModelFileError: ``model_path`` cannot be loaded.
    """
    (path,) = export_models(
        model_path,
        [(out, format)],
        detect_size=detect_size,
        fixed_size=fixed_size,
        calibration=calibration,
        calibration_images=calibration_images,
        overwrite=overwrite,
    )
    return path


def export_models(
    model_path: str | os.PathLike,
    outputs: list[tuple[str | os.PathLike, str | None]],
    *,
    detect_size: int | None = None,
    fixed_size: int | None = None,
    calibration: list[Path] = (),
    calibration_images: int = CALIBRATION_IMAGES,
    overwrite: bool = False,
) -> list[Path]:
    """:func:`export_model` to several ``(out, format)`` at once: the model loaded, and its graph saved, once.

    The formats other than ``keras`` all start from one SavedModel, and an
    int8 LiteRT model from the float one, so exporting them together takes
    about the time of the slowest alone. Nothing is put in place unless every
    conversion succeeded. Arguments, returns and errors as :func:`export_model`'s.
    """
    from facegrid.infer.detector import Detector
    from facegrid.model.network import check_settings, load_detector

    if not outputs:
        raise ValueError("nothing to export: name at least one output")
    outputs = [(Path(out), format_for(out, format)) for out, format in outputs]
    formats = [format for _, format in outputs]
    if len({out.resolve() for out, _ in outputs}) < len(outputs):
        raise ValueError("each output must be named once")
    if fixed_size is not None:
        check_input_side("a fixed size", fixed_size)
    if fixed_size is not None and "keras" in formats:
        raise ValueError("a .keras model runs at any input size; a fixed size is for the other formats")
    if detect_size is not None and fixed_size is not None and detect_size != fixed_size:
        raise ValueError(f"detect size {detect_size} differs from the fixed input size {fixed_size}")
    if "litert-int8" in formats and not calibration:
        raise ValueError("litert-int8 needs calibration images (a folder of training images)")
    if calibration_images < 1:
        raise ValueError(f"calibration images: need at least 1, got {calibration_images}")
    config = model_config(model_path)
    if config is None:
        raise PathError(model_path, f"no settings beside it ({settings_path(model_path).name} or config.toml)")
    config = config.replace(detect_size=fixed_size or detect_size)
    sidecars = list(dict.fromkeys(settings_path(out) for out, _ in outputs))  # NAME.keras and NAME.tflite share one
    new_sidecars = [sidecar for sidecar in sidecars if not _holds_settings(sidecar, config)]
    check_outputs([out for out, _ in outputs] + new_sidecars, [model_path, model_settings_file(model_path)], overwrite)
    for out, _ in outputs:
        if out.is_dir() and not (out / "saved_model.pb").is_file():
            raise PathError(out, "a folder that is not a SavedModel: an export replaces only a file or a SavedModel")
    model = load_detector(model_path)
    check_settings(model, config, model_path)

    with contextlib.ExitStack() as stack:
        staged = []
        for out, format in outputs:
            out.parent.mkdir(parents=True, exist_ok=True)
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".facegrid-export-", dir=out.parent)))
            staged.append(work / (out.name if FORMATS[format] else "saved_model"))
        conversion = _Conversion(model, config, fixed_size, staged[0].parent, Detector)
        for (out, format), place in zip(outputs, staged, strict=True):
            try:
                conversion.write(format, place, calibration, calibration_images)
            except (ImportError, ModuleNotFoundError) as error:
                needs = "tf2onnx: pip install 'facegrid[export]'" if format == "onnx" else str(error)
                raise ExportError(out, f"{format} export needs {needs}") from None
            except Exception as error:  # converters raise many unrelated types; the user gets their reason
                if isinstance(error, PathError):
                    raise
                raise ExportError(out, f"{format} export failed: {_converter_reason(error)}") from None
        for (out, format), place in zip(outputs, staged, strict=True):
            if out.is_dir():
                shutil.rmtree(out)
            os.replace(place, out)
            log.info("exported %s as %s (%s)", model_path, out, format)
    for sidecar in new_sidecars:
        config.save(sidecar)
    return [out for out, _ in outputs]


def _holds_settings(path: Path, config: Config) -> bool:
    """Whether ``path`` is a settings file saying ``config`` (however written: an older release's file has fewer
    keys), so that it can be shared rather than rewritten."""
    try:
        return path.is_file() and load_config(path) == config
    except (SettingsError, OSError):
        return False


class _Conversion:
    """One model's exports: its SavedModel and float LiteRT model made once, for every format that starts from them."""

    def __init__(self, model, config: Config, fixed_size: int | None, work: Path, detector_type):
        self.model, self.config, self.fixed_size, self.work = model, config, fixed_size, work
        self.detector_type = detector_type
        self._saved = None
        self._float = None

    def write(self, format: str, staged: Path, calibration, calibration_images: int) -> None:
        """``staged`` written in ``format``."""
        if format == "keras":
            self.model.save(staged)
        elif format == "saved_model":
            self.saved_model(staged)
        elif format == "onnx":
            _write_onnx(self.saved_model(), staged)
        elif format == "litert":
            staged.write_bytes(self.float_litert())
        else:  # litert-int8
            config, fixed = self.config, self.fixed_size
            detector = self.detector_type.for_config(self.model, config)
            images = pick_calibration_images(calibration, calibration_images, config.seed)
            log.info("calibrating int8 ranges on %d image(s)", len(images))
            batches = functools.partial(_calibration_batches, detector, images, fixed)
            staged.write_bytes(_int8_litert(self.saved_model(), self.float_litert(), config.strides, batches))

    def saved_model(self, place: Path | None = None) -> Path:
        """The graph of the non-Keras formats as a SavedModel, exported the first time asked: at ``place`` if
        given (a SavedModel output's own), else in the work folder. The other formats convert from it."""
        if self._saved is None:
            import tensorflow as tf

            shape = [1, self.fixed_size, self.fixed_size, 3] if self.fixed_size else [None, None, None, 3]
            signature = [tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)]
            saved = place or self.work / "saved_model_for_conversions"
            deployable_graph(self.model, self.config).export(
                str(saved), format="tf_saved_model", input_signature=signature, verbose=False
            )
            self._saved = saved
        elif place is not None:
            shutil.copytree(self._saved, place)
        return self._saved

    def float_litert(self) -> bytes:
        if self._float is None:
            self._float = _float_litert(self.saved_model())
        return self._float
