"""The detector: MobileNetV2 backbone and a grid head producing ``[G, G, 5]``.

The model takes uint8 RGB ``[S, S, 3]`` and scales it to ``[-1, 1]`` itself,
``x * PIXEL_SCALE + PIXEL_OFFSET`` (MobileNetV2's preprocessing), so data
pipelines ship uint8 batches, four times smaller than float32, and exported
models accept plain pixels. Its output follows the grid
codec's channel layout (:mod:`facegrid.core.codec`), every channel through a sigmoid:
objectness, centre within the cell, and size as a fraction of the image.

Box sizes are fractions of the image, and the network can only judge a face's
size in pixels; :class:`SizeToImageFraction` therefore rescales the size
channels by ``G_train / G``, so that a model trained at ``S x S`` and run on a
larger input reports sizes as fractions of that larger input.

For ``G = S/32`` the head sits on the backbone's last feature map. Finer grids
(``S/16``, ``S/8``) upsample it and add the stride-16 (and stride-8) backbone
stages, a small feature pyramid, so each cell sees both context and detail.

A pyramid model (``config.strides``, :class:`facegrid.core.codec.PyramidCodec`)
taps the backbone at strides 8, 16 and 32 (its last 320-channel block: the
1280-channel classifier layer is left out), merges them top-down as a feature
pyramid, and puts a small head of its own on every level. Its output is every
level's cells flattened into one ``[B, N, 5]`` array (:class:`PyramidCells`),
so one model runs at any input size, square or not.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import keras
from keras import ops

from facegrid.core.codec import SIZE_LOG_LIMIT, PyramidCodec, describe_layout
from facegrid.core.config import BUNDLED_IMAGENET, Config, settings_path
from facegrid.core.errors import ModelFileError

#: uint8 pixels become ``x * PIXEL_SCALE + PIXEL_OFFSET``, in ``[-1, 1]``.
PIXEL_SCALE = 1.0 / 127.5
PIXEL_OFFSET = -1.0

#: Backbone layers tapped for finer grids, by stride (names of keras' MobileNetV2).
TAPS = {16: "block_12_add", 8: "block_5_add"}

#: Backbone layers a pyramid's levels are fed from, by stride.
PYRAMID_TAPS = {8: "block_5_add", 16: "block_12_add", 32: "block_16_project_BN"}

#: Momentum of the backbone's batch-norm statistics: they follow the last ~100 steps.
BATCH_NORM_MOMENTUM = 0.99

#: Objectness prior of the freshly initialised head (focal-loss initialisation).
OBJECTNESS_PRIOR = 0.01


def build_backbone(config: Config) -> keras.Model:
    """MobileNetV2 without its classifier, with the weights ``config`` names.

    Returns a model from ``[-1, 1]`` float input of any size (multiple of 32) to a
    list of feature maps, finest first: one map for ``G = S/32``, two for
    ``S/16``, three for ``S/8``; for a pyramid, one per stride.

    ``config.backbone_weights`` may also name a facegrid ``.keras`` model with
    the same backbone: its backbone's weights (already tuned on faces) are
    the starting point.
    """
    shape = (None, None, 3)
    if config.backbone_style == "torchvision":
        from facegrid.model.backbone import torchvision_compatible_mobilenet_v2

        base = torchvision_compatible_mobilenet_v2(None, alpha=config.alpha)
    else:
        weights = "imagenet" if config.backbone_weights == "imagenet" else None
        base = keras.applications.MobileNetV2(input_shape=shape, alpha=config.alpha, include_top=False, weights=weights)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # keras.applications averages batch statistics over ~1,000 steps (momentum 0.999); a
            # detector fine-tuned for a few thousand steps then runs on statistics that lag its weights
            layer.momentum = BATCH_NORM_MOMENTUM
    if config.backbone_weights == BUNDLED_IMAGENET:
        from facegrid.core.resources import bundled_backbone_path
        from facegrid.model.backbone import narrowed

        if config.alpha == 1.0:
            base.load_weights(bundled_backbone_path())
        else:
            narrowed(base, bundled_backbone_path())
    elif config.backbone_weights.endswith(".keras"):
        for layer in load_detector(config.backbone_weights).get_layer("backbone").layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
    elif config.backbone_weights not in ("none", "imagenet"):
        base.load_weights(config.backbone_weights)
    if config.strides:
        outputs = [base.get_layer(PYRAMID_TAPS[s]).output for s in config.strides]
    else:
        strides = [s for s in (8, 16) if config.input_size // config.grid_size <= s]
        outputs = [base.get_layer(TAPS[s]).output for s in strides] + [base.output]
    return keras.Model(base.inputs, outputs, name="backbone")


@keras.saving.register_keras_serializable(package="facegrid")
class SizeToImageFraction(keras.layers.Layer):
    """Rescale the size channels (3, 4) from the training grid to the grid actually produced.

    Args:
        train_grid: ``G`` at the training input size, where the factor is 1.
    """

    def __init__(self, train_grid: int, **kwargs):
        super().__init__(**kwargs)
        self.train_grid = train_grid

    def call(self, grid):
        factor = self.train_grid / ops.cast(ops.shape(grid)[1], grid.dtype)
        return ops.concatenate([grid[..., :3], grid[..., 3:] * factor], axis=-1)

    def get_config(self):
        return {**super().get_config(), "train_grid": self.train_grid}


@keras.saving.register_keras_serializable(package="facegrid")
class PyramidCells(keras.layers.Layer):
    """Every level's raw ``[B, H_l, W_l, 5]`` head output as the codec's ``[B, N, 5]`` cells.

    Channel 0 goes through a sigmoid (the score), channels 1-2 stay as they
    are (centre offsets in strides), channels 3-4 through ``exp`` (sizes in
    strides, always positive), in the layout of :class:`facegrid.core.codec.PyramidCodec`.
    Exported models (:mod:`facegrid.deploy.export`) stop before this layer;
    :func:`facegrid.infer.runtimes.pyramid_cells` does the same for them.
    """

    def call(self, levels):
        flat = [ops.reshape(level, (ops.shape(level)[0], -1, 5)) for level in levels]
        cells = ops.concatenate(flat, axis=1)
        sizes = ops.exp(ops.clip(cells[..., 3:], -SIZE_LOG_LIMIT, SIZE_LOG_LIMIT))
        return ops.concatenate([ops.sigmoid(cells[..., :1]), cells[..., 1:3], sizes], axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], None, 5)


def _conv_bn_relu(x, channels: int, kernel: int, name: str):
    x = keras.layers.Conv2D(channels, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_detector(config: Config = Config()) -> keras.Model:
    """The detector for ``config``: uint8 ``[B, H, W, 3]`` in; ``[B, H/s, W/s, 5]`` grids or ``[B, N, 5]`` cells out.

    A single-grid model's stride ``s`` is ``input_size / grid_size``: trained at
    ``S x S`` it outputs ``G x G``. A pyramid model (``config.strides``) outputs
    the cells of all its levels (:class:`facegrid.core.codec.PyramidCodec`). Both
    accept any input whose sides are multiples of 32.

    Example:
        >>> model = build_detector(Config(input_size=224, grid_size=14))  # doctest: +SKIP
        >>> model.output_shape  # doctest: +SKIP
        (None, 14, 14, 5)
    """
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(PIXEL_SCALE, PIXEL_OFFSET, name="to_unit_range")(inputs)
    if config.strides:
        return keras.Model(inputs, _pyramid_head(build_backbone(config)(scaled), config), name="facegrid_pyramid")
    *taps, top = build_backbone(config)(scaled)

    x = _conv_bn_relu(top, config.head_channels, 1, "lateral32")
    for tap, stride in zip(reversed(taps), (16, 8)):
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{stride}")(x)
        lateral = _conv_bn_relu(tap, config.head_channels, 1, f"lateral{stride}")
        x = keras.layers.Add(name=f"merge{stride}")([x, lateral])
    x = _conv_bn_relu(x, config.head_channels, 3, "head")
    prior = -math.log((1 - OBJECTNESS_PRIOR) / OBJECTNESS_PRIOR)
    raw = keras.layers.Conv2D(
        5,
        1,
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant([prior, 0.0, 0.0, -3.0, -3.0]),
        name="grid_raw",
    )(x)
    outputs = SizeToImageFraction(config.grid_size, name="grid")(raw)
    return keras.Model(inputs, outputs, name="facegrid_detector")


def _separable_bn_relu(x, channels: int, name: str):
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn_relu(x, channels, 1, f"{name}_pw")


def _pyramid_head(features: list, config: Config):
    """Top-down feature pyramid over the backbone's maps, then one head per level, as ``[B, N, 5]`` cells."""
    channels = config.head_channels
    merged = [_conv_bn_relu(features[-1], channels, 1, f"lateral{config.strides[-1]}")]
    for feature, stride in zip(reversed(features[:-1]), reversed(config.strides[:-1])):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{stride}")(merged[0])
        lateral = _conv_bn_relu(feature, channels, 1, f"lateral{stride}")
        merged.insert(0, keras.layers.Add(name=f"merge{stride}")([up, lateral]))
    prior = -math.log((1 - OBJECTNESS_PRIOR) / OBJECTNESS_PRIOR)
    raw = []
    for level, stride in enumerate(config.strides):
        # sizes start at the middle of the level's range: 4 strides, 2 on the finest level (it also takes
        # every face below its range)
        size = math.log(PyramidCodec.faces_per_stride / (2.0 if level == 0 else 1.0))
        x = _separable_bn_relu(merged[level], channels, f"head{stride}_1")
        x = _separable_bn_relu(x, channels, f"head{stride}_2")
        raw.append(
            keras.layers.Conv2D(
                5,
                1,
                bias_initializer=keras.initializers.Constant([prior, 0.0, 0.0, size, size]),
                name=f"cells{stride}",
            )(x)
        )
    return PyramidCells(name="cells")(raw)


def load_detector(path: str | os.PathLike, *, compile: bool = False) -> keras.Model:
    """Load a saved facegrid model in Keras safe mode: a file carrying code is refused, never run.

    Model files travel between people. A ``.keras`` file can hold Python
    (a ``Lambda`` layer's function, say) that would run on loading; Keras' safe
    mode refuses it, and facegrid never turns safe mode off.

    Args:
        path: a ``.keras`` file.
        compile: also restore the loss and optimizer state (to continue training).

    Raises:
        ModelFileError: missing, not a ``.keras`` file, or carrying code.
    """
    _check_model_file(Path(path))
    try:
        model = keras.saving.load_model(
            path,
            compile=compile,
            safe_mode=True,
            custom_objects={"SizeToImageFraction": SizeToImageFraction, "PyramidCells": PyramidCells},
        )
    except Exception as error:  # Keras raises many types (ValueError, KeyError, OSError, TypeError) for bad files
        text = str(error).strip()
        raise ModelFileError(
            path, f"cannot load it: {text.splitlines()[0] if text else type(error).__name__}"
        ) from None
    shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else ()
    if len(shape) not in (3, 4) or shape[-1] != 5:
        raise ModelFileError(
            path,
            f"a Keras model, but not a facegrid detector: its output is {model.output_shape}, "
            "not grids [B, G, G, 5] or cells [B, N, 5]",
        )
    return model


def head_strides(model: keras.Model) -> tuple[int, ...]:
    """The strides of a pyramid detector's heads (its layers ``cells<stride>``); ``()`` for a single grid."""
    return tuple(
        sorted(
            int(layer.name[len("cells") :])
            for layer in model.layers
            if layer.name.startswith("cells") and layer.name[len("cells") :].isdigit()
        )
    )


def check_settings(model: keras.Model, config: Config, path: str | os.PathLike) -> None:
    """Refuse settings that are not the model's own: the layout they say must be the one of its heads.

    Args:
        path: the model file, named in the message with its settings file.

    Raises:
        ModelFileError: the settings say another layout (strides, or a
            single grid) than the model has.
    """
    found = head_strides(model)
    if found != config.strides:
        raise ModelFileError(
            path,
            f"is {describe_layout(found)}, but its settings ({settings_path(path).name} "
            f"or config.toml) say {describe_layout(config.strides)}: they are another model's",
        )


#: Members of a ``.keras`` file that hold its model.
KERAS_MEMBERS = ("config.json", "model.weights.h5")


def _check_model_file(path: Path) -> None:
    """Refuse what is not a ``.keras`` file Keras could load in safe mode, before Keras reads it.

    A serialised Python lambda (``"__lambda__"`` in the model's
    ``config.json``) is code that would run on loading.
    """
    if path.is_dir():
        raise ModelFileError(
            path, "a folder that is no SavedModel (no saved_model.pb in it), and not a .keras model file"
        )
    if not path.is_file():
        raise ModelFileError(path, "no such file")
    try:
        with zipfile.ZipFile(path) as zipped:
            names = set(zipped.namelist())
            missing = [name for name in KERAS_MEMBERS if name not in names]
            if missing:
                raise ModelFileError(path, f"a zip archive without a Keras model in it (no {missing[0]})")
            config = zipped.read("config.json")
    except (zipfile.BadZipFile, EOFError, OSError):
        raise ModelFileError(path, "not a .keras model file (a .keras file is a zip archive)") from None
    if b'"__lambda__"' in config:
        raise ModelFileError(
            path,
            "refused: it carries Python code (a lambda) that would run on loading; "
            "facegrid loads models in Keras safe mode only",
        )
