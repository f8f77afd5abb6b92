"""The detector: MobileNetV2 backbone and a grid head producing ``[G, G, 5]``.

The model takes uint8 RGB ``[S, S, 3]`` and scales it to ``[-1, 1]`` itself
(:data:`facegrid.images.PIXEL_SCALE`), so data pipelines ship compact uint8
batches and exported models accept plain pixels. Its output follows the grid
codec's channel layout (:mod:`facegrid.grid`), every channel through a sigmoid:
objectness, centre within the cell, and size as a fraction of the image.

Box sizes are fractions of the image, and the network can only judge a face's
size in pixels; :class:`SizeToImageFraction` therefore rescales the size
channels by ``G_train / G``, so that a model trained at ``S x S`` and run on a
larger input reports sizes as fractions of that larger input.

For ``G = S/32`` the head sits on the backbone's last feature map. Finer grids
(``S/16``, ``S/8``) upsample it and add the stride-16 (and stride-8) backbone
stages, a small feature pyramid, so each cell sees both context and detail.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import keras
from keras import ops

from facegrid.config import Config
from facegrid.errors import ModelFileError
from facegrid.images import PIXEL_OFFSET, PIXEL_SCALE

#: Backbone layers tapped for finer grids, by stride (names of keras' MobileNetV2).
TAPS = {16: "block_12_add", 8: "block_5_add"}

#: Objectness prior of the freshly initialised head (focal-loss initialisation).
OBJECTNESS_PRIOR = 0.01


def build_backbone(config: Config) -> keras.Model:
    """MobileNetV2 without its classifier, with the weights ``config`` names.

    Returns a model from ``[-1, 1]`` float input of any size (multiple of 32) to a
    list of feature maps, finest first: one map for ``G = S/32``, two for
    ``S/16``, three for ``S/8``.
    """
    shape = (None, None, 3)
    if config.backbone_style == "torchvision":
        from facegrid.pretrained import torchvision_compatible_mobilenet_v2

        base = torchvision_compatible_mobilenet_v2(None, alpha=config.alpha)
    else:
        weights = "imagenet" if config.backbone_weights == "imagenet" else None
        base = keras.applications.MobileNetV2(input_shape=shape, alpha=config.alpha, include_top=False, weights=weights)
    if config.backbone_weights not in ("none", "imagenet"):
        base.load_weights(config.backbone_weights)
    strides = [s for s in (8, 16) if config.stride <= s]
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


def _conv_bn_relu(x, channels: int, kernel: int, name: str):
    x = keras.layers.Conv2D(channels, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_detector(config: Config = Config()) -> keras.Model:
    """The detector for ``config``: uint8 ``[B, H, W, 3]`` in, ``[B, H/s, W/s, 5]`` out.

    ``s`` is ``config.stride``; trained at ``S x S`` it outputs ``G x G``, and it
    accepts any other size that is a multiple of 32.

    Example:
        >>> model = build_detector(Config(input_size=224, grid_size=14, alpha=0.35))  # doctest: +SKIP
        >>> model.output_shape  # doctest: +SKIP
        (None, 14, 14, 5)
    """
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(PIXEL_SCALE, PIXEL_OFFSET, name="to_unit_range")(inputs)
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
    if not Path(path).is_file():
        raise ModelFileError(path, "no such file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(path, "not a .keras model file (a .keras file is a zip archive)")
    try:
        return keras.saving.load_model(
            path, compile=compile, safe_mode=True, custom_objects={"SizeToImageFraction": SizeToImageFraction}
        )
    except ValueError as error:
        text = str(error)
        if "arbitrary code" in text or "safe_mode" in text:
            raise ModelFileError(
                path, "refused: it carries Python code (such as a Lambda layer) that would run on loading; "
                "facegrid loads models in Keras safe mode only"
            ) from None
        raise ModelFileError(path, f"cannot load it: {text.splitlines()[0] if text else type(error).__name__}") from None
