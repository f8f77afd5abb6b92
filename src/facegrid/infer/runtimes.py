"""Run exported detectors: LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``, TensorFlow for a SavedModel.

An exported model (:mod:`facegrid.deploy.export`) takes uint8 ``[B, H, W, 3]`` pixels,
as the Keras model does. A pyramid model's graph stops short of
:class:`facegrid.model.network.PyramidCells`: for each stride ``s`` it outputs
``scores_s`` (``[B, H/s, W/s, 1]``, after the sigmoid) and ``boxes_s``
(``[B, H/s, W/s, 4]``: centre offsets and log sizes, in strides), two tensors
so that an int8 model quantises scores and boxes each on its own scale.
:func:`pyramid_cells` turns them into the codec's ``[B, N, 5]`` cells. A
single-grid model outputs its grid as ``grid``.

Each model class answers ``predict_on_batch`` with the arrays a Keras model
gives, so :class:`facegrid.infer.detector.Detector` runs every format the same way.
LiteRT and ONNX Runtime models need neither TensorFlow nor Keras.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facegrid.core.codec import SIZE_LOG_LIMIT, describe_layout
from facegrid.core.errors import ModelFileError

#: Name of the image input of every exported model.
INPUT_NAME = "image"

#: Name of a single-grid model's output.
GRID_OUTPUT = "grid"

#: Suffixes of the formats facegrid runs without TensorFlow, and the extra that installs each runtime.
RUNTIME_EXTRAS = {".tflite": "litert", ".onnx": "onnx"}


def score_output(stride: int) -> str:
    """Name of a pyramid level's score output."""
    return f"scores_{stride}"


def box_output(stride: int) -> str:
    """Name of a pyramid level's box output."""
    return f"boxes_{stride}"


def output_names(strides: tuple[int, ...]) -> list[str]:
    """Every output an exported model of these strides has (``()``: a single grid)."""
    if not strides:
        return [GRID_OUTPUT]
    return [name for stride in strides for name in (score_output(stride), box_output(stride))]


def pyramid_cells(outputs: dict[str, np.ndarray], strides: tuple[int, ...]) -> np.ndarray:
    """The ``[B, N, 5]`` cells of :class:`facegrid.core.codec.PyramidCodec` from an exported pyramid's outputs."""
    levels = []
    for stride in strides:
        scores = np.asarray(outputs[score_output(stride)], np.float32)
        boxes = np.asarray(outputs[box_output(stride)], np.float32)
        batch = scores.shape[0]
        scores, boxes = scores.reshape(batch, -1, 1), boxes.reshape(batch, -1, 4)
        sizes = np.exp(np.clip(boxes[..., 2:], -SIZE_LOG_LIMIT, SIZE_LOG_LIMIT))
        levels.append(np.concatenate([scores, boxes[..., :2], sizes], axis=-1))
    return np.concatenate(levels, axis=1)


#: Side of the blank image :meth:`ExportedModel.check_layout` runs a model on (the smallest every stride divides).
PROBE_SIZE = 64


def _missing_runtime(path: Path, module: str) -> ModelFileError:
    extra = RUNTIME_EXTRAS[path.suffix]
    return ModelFileError(path, f"running it needs {module}: pip install 'facegrid[{extra}]'")


class ExportedModel:
    """What every runtime shares: the input check, the batch loop and the outputs' layout.

    Attributes:
        path: the model file (or SavedModel folder).
        strides: the pyramid's strides, ``()`` for a single grid.
        fixed_size: ``(height, width)`` of a model exported for one input size; None if any size goes.
        batch_fixed: the model takes one image at a time.
    """

    #: The runtime's name, as ``-v`` reports it.
    RUNTIME = ""

    def __init__(self, path: Path, strides: tuple[int, ...], input_shape, names):
        self.path, self.strides = path, tuple(strides)
        if set(names) != set(output_names(self.strides)):
            raise ModelFileError(
                path,
                f"outputs {', '.join(sorted(names))}, but its settings say "
                f"{describe_layout(self.strides)}: they are another model's, "
                "or it is no facegrid export",
            )
        batch, height, width = (int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in input_shape[:3])
        self.batch_fixed = batch is not None
        self.fixed_size = (height, width) if height and width else None

    def check_layout(self) -> None:
        """Run the model once on a blank image and check each output's grid against the strides of its settings.

        Raises:
            ModelFileError: an output's shape is not the one its stride gives
                (the settings are another model's), or the model does not run.
        """
        height, width = self.fixed_size or (PROBE_SIZE, PROBE_SIZE)
        try:
            outputs = self._run(np.zeros((1, height, width, 3), np.uint8))
        except Exception as error:  # each runtime raises its own types
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelFileError(self.path, f"does not run on a {width} x {height} image: {reason}") from None
        expected = (
            {GRID_OUTPUT: None}
            if not self.strides
            else {
                name: (height // stride, width // stride, channels)
                for stride in self.strides
                for name, channels in ((score_output(stride), 1), (box_output(stride), 4))
            }
        )
        for name, shape in expected.items():
            found = tuple(np.shape(outputs[name])[1:])
            if (shape is not None and found != shape) or (shape is None and (len(found) != 3 or found[-1] != 5)):
                raise ModelFileError(
                    self.path,
                    f"output {name} is {list(found)} on a {width} x {height} image, "
                    f"not what {describe_layout(self.strides)} gives: its settings are another model's",
                )

    def predict_on_batch(self, pixels: np.ndarray) -> np.ndarray:
        """Cells ``[B, N, 5]`` (or grids ``[B, G, G, 5]``) for uint8 ``[B, H, W, 3]`` pixels."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if self.batch_fixed and len(pixels) > 1:  # a model exported for one image at a time
            return np.concatenate([self.predict_on_batch(one[None]) for one in pixels])
        outputs = self._run(pixels)
        if not self.strides:
            return np.asarray(outputs[GRID_OUTPUT], np.float32)
        return pyramid_cells(outputs, self.strides)

    def _run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class LiteRTModel(ExportedModel):
    """A ``.tflite`` model run by LiteRT's interpreter (XNNPACK on the CPU), one image at a time.

    Planning a graph for a new input size takes about a millisecond, and
    images fitted to a longer side come in a handful of sizes; so each size
    keeps an interpreter planned for it (the last :data:`PLANNED_SIZES`).
    """

    #: Input sizes an interpreter is kept planned for.
    PLANNED_SIZES = 16

    RUNTIME = "LiteRT"

    def __init__(self, path: str | os.PathLike, strides: tuple[int, ...], threads: int | None = None):
        path = Path(path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise _missing_runtime(path, "LiteRT") from None
        content = path.read_bytes()
        self._open = lambda: Interpreter(model_content=content, num_threads=threads or os.cpu_count())
        try:
            first = self._open()
            (image,) = first.get_input_details()
            if (
                min(image["shape_signature"][1:3]) < 0
            ):  # any size: planned first for the probe's, which every level fits
                first.resize_tensor_input(image["index"], [1, PROBE_SIZE, PROBE_SIZE, 3])
            first.allocate_tensors()
            signature = first.get_signature_runner()
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(path, f"not a LiteRT model: {str(error).splitlines()[0]}") from None
        self._input = signature.get_input_details()[INPUT_NAME]["index"]
        self._outputs = {name: details["index"] for name, details in signature.get_output_details().items()}
        del signature  # it holds views of the interpreter's buffers, which would block resizing
        details = next(d for d in first.get_input_details() if d["index"] == self._input)
        super().__init__(path, strides, list(details["shape_signature"]), self._outputs)
        self.batch_fixed = True  # XNNPACK cannot plan an int8 graph for B > 1
        # the size the graph was saved with; resizing a fixed-size graph, even to its own size, breaks XNNPACK
        self._planned = {tuple(int(d) for d in details["shape"]): first}

    def _run(self, pixels):
        interpreter = self._planned.get(pixels.shape)
        if interpreter is None:
            if len(self._planned) >= self.PLANNED_SIZES:
                del self._planned[next(iter(self._planned))]  # the oldest
            interpreter = self._open()
            interpreter.resize_tensor_input(self._input, pixels.shape)
            interpreter.allocate_tensors()
            self._planned[pixels.shape] = interpreter
        interpreter.set_tensor(self._input, pixels)
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self._outputs.items()}


class OnnxModel(ExportedModel):
    """A ``.onnx`` model run by ONNX Runtime on the CPU."""

    RUNTIME = "ONNX Runtime"

    def __init__(self, path: str | os.PathLike, strides: tuple[int, ...], threads: int | None = None):
        path = Path(path)
        try:
            import onnxruntime
        except ImportError:
            raise _missing_runtime(path, "ONNX Runtime") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own unrelated classes (InvalidProtobuf, Fail, ...)
            raise ModelFileError(path, f"not an ONNX model: {str(error).splitlines()[0]}") from None
        (image,) = self.session.get_inputs()
        self._input = image.name
        self._names = [output.name for output in self.session.get_outputs()]
        super().__init__(path, strides, image.shape, self._names)

    def _run(self, pixels):
        return dict(zip(self._names, self.session.run(self._names, {self._input: pixels})))


class SavedModel(ExportedModel):
    """A TensorFlow SavedModel folder, run through its ``serving_default`` signature (on TensorFlow's threads)."""

    RUNTIME = "TensorFlow (SavedModel)"

    def __init__(self, path: str | os.PathLike, strides: tuple[int, ...]):
        import tensorflow as tf

        path = Path(path)
        try:
            self._serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        except (OSError, ValueError, KeyError) as error:
            raise ModelFileError(path, f"not a SavedModel with a serving signature: {error}") from None
        (spec,) = self._serve.structured_input_signature[1].values()
        super().__init__(path, strides, spec.shape.as_list(), list(self._serve.structured_outputs))

    def _run(self, pixels):
        return {name: value.numpy() for name, value in self._serve(**{INPUT_NAME: pixels}).items()}


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an exported model this module runs (rather than a ``.keras`` file)."""
    path = Path(path)
    return path.suffix in RUNTIME_EXTRAS or (path / "saved_model.pb").is_file()


def load_exported(path: str | os.PathLike, strides: tuple[int, ...], threads: int | None = None) -> ExportedModel:
    """The runtime for an exported model, chosen by its suffix (a folder: a SavedModel).

    Args:
        path: ``.tflite``, ``.onnx``, or a SavedModel folder.
        strides: the model's pyramid strides from its settings; ``()`` for a single grid.
        threads: CPU threads LiteRT or ONNX Runtime may use (default: all);
            a SavedModel runs on TensorFlow's process-wide threads.

    Raises:
        ModelFileError: missing, unreadable, not a facegrid export, its outputs not
            those of ``strides``, or its runtime is not installed.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if path.is_dir():
        model = SavedModel(path, strides)
    else:
        model = {".tflite": LiteRTModel, ".onnx": OnnxModel}[path.suffix](path, strides, threads)
    model.check_layout()
    return model
