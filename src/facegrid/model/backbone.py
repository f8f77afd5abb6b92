"""The ImageNet-pretrained MobileNetV2 backbone, laid out as Keras' and computing torchvision's function.

No Keras ImageNet weights can be downloaded where facegrid trains, so
facegrid ships torchvision's ImageNet MobileNetV2 converted for Keras
(:func:`facegrid.core.resources.bundled_backbone_path`, written by
:mod:`facegrid.model.from_torchvision`): the default ``backbone_weights``
of :class:`facegrid.core.config.Config`, so training starts from ImageNet
features without torch or a download. The backbone here computes the same
function as ``torchvision.models.mobilenet_v2()``'s ``features``:

* **Padding.** torchvision pads every 3x3 convolution by 1 on all sides.
  Keras' ``MobileNetV2`` pads stride-2 depthwise convolutions with
  ``ZeroPadding2D(((0, 1), (0, 1)))`` on even sizes (``correct_pad``) and
  builds ``Conv1`` with ``padding="same"``, which on even sizes also pads
  ``(0, 1)``: both read the image one pixel shifted from torchvision. The
  backbone here pads ``((1, 1), (1, 1))`` in every ``*_pad`` layer and feeds
  ``Conv1`` (now ``padding="valid"``) through a new ``Conv1_pad`` layer.
  Output sizes are unchanged (``ceil(S / 2)`` per stride-2 step).
* **BatchNormalization** epsilon is torchvision's ``1e-5``, not Keras' ``1e-3``.
* **Input.** Like every facegrid backbone it takes RGB in ``[-1, 1]`` (the
  model scales uint8 with ``x / 127.5 - 1``). torchvision expects
  ``(p - mean) / std`` of ``p`` in ``[0, 1]``. With ``p = (u + 1) / 2`` that
  is ``(u - (2 mean - 1)) / (2 std)``, an exact per-channel affine, done by a
  fixed ``keras.layers.Normalization`` layer named ``torchvision_normalize``
  (``mean = 2 mean - 1``, ``variance = (2 std) ** 2``; no weights, not
  trained) in front of ``Conv1_pad``. It is *not* folded into ``Conv1``:
  ``Conv1`` zero-pads its input, and torchvision's zeros live in the
  normalised space; a folded bias would be wrong wherever Conv1's window
  overlaps the padding (the first output row and column).

Every other layer keeps the name, type and weight shapes of
``keras.applications.MobileNetV2(alpha=1.0, include_top=False)``, so
intermediate maps can be tapped by their usual names (``block_6_expand_relu``
at stride 8, ``block_13_expand_relu`` at 16, ``out_relu`` at 32), and the
weights file loads into the backbone at any input size.
"""

from __future__ import annotations

from pathlib import Path

#: torchvision's ImageNet normalisation of RGB in ``[0, 1]``.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

#: torchvision's ``BatchNorm2d`` epsilon (Keras' MobileNetV2 uses ``1e-3``).
BN_EPSILON = 1e-5

#: The input normalisation layer added in front of ``Conv1``.
NORMALIZE_LAYER = "torchvision_normalize"

#: The symmetric padding layer added in front of ``Conv1``.
CONV1_PAD_LAYER = "Conv1_pad"

#: The final feature map (ReLU6 of the 1280-channel ``Conv_1``).
OUTPUT_LAYER = "out_relu"


def input_normalization() -> tuple[list[float], list[float]]:
    """``(mean, variance)`` per channel mapping ``[-1, 1]`` input to torchvision's normalised input.

    ``(u - mean) / sqrt(variance) == ((u + 1) / 2 - TORCHVISION_MEAN) / TORCHVISION_STD``.
    """
    mean = [2.0 * m - 1.0 for m in TORCHVISION_MEAN]
    variance = [(2.0 * s) ** 2 for s in TORCHVISION_STD]
    return mean, variance


def torchvision_compatible_mobilenet_v2(input_size: int | None, alpha: float = 1.0):
    """MobileNetV2 features laid out as Keras' and computing torchvision's function.

    Args:
        input_size: side ``S`` of the square RGB input (at least 32), or None
            for a model that takes any size.
        alpha: width multiplier; torchvision's checkpoint is ``1.0``.

    Returns:
        A functional ``keras.Model`` from float RGB ``[B, S, S, 3]`` in
        ``[-1, 1]`` to the ReLU6 ``out_relu`` map ``[B, ceil(S/32), ceil(S/32),
        1280]``, randomly initialised (load weights with
        :func:`load_torchvision_mobilenet_v2`). Its layers are those of
        ``keras.applications.MobileNetV2(alpha, include_top=False)`` with the
        same names and weight shapes, padding ``((1, 1), (1, 1))`` in every
        ``*_pad`` layer, ``Conv1`` ``"valid"`` behind the added
        ``Conv1_pad``, BatchNormalization epsilon ``1e-5``, and the added
        fixed ``torchvision_normalize`` layer first.
    """
    import keras

    size = None if input_size is None else int(input_size)
    reference = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None
    )

    def clone_function(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            config["padding"] = ((1, 1), (1, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            config["epsilon"] = BN_EPSILON
        elif layer.name == "Conv1":
            config["padding"] = "valid"
        return layer.__class__.from_config(config)

    mean, variance = input_normalization()

    def call_function(layer, *args, **kwargs):
        if layer.name == "Conv1":
            (x,) = args
            x = keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name=NORMALIZE_LAYER)(x)
            x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name=CONV1_PAD_LAYER)(x)
            return layer(x, **kwargs)
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(
        reference,
        input_tensors=keras.Input(shape=(size, size, 3), name="input_layer"),
        clone_function=clone_function,
        call_function=call_function,
    )
    model = keras.Model(
        clone.input,
        clone.output,
        name=f"mobilenetv2_torchvision_{alpha:0.2f}_{size or 'any'}",
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.ZeroPadding2D):
            assert tuple(map(tuple, layer.padding)) == ((1, 1), (1, 1)), layer.name
    return model


def load_torchvision_mobilenet_v2(weights_path: str | Path, input_size: int):
    """The :func:`torchvision_compatible_mobilenet_v2` backbone with converted weights loaded.

    Args:
        weights_path: a file written by :func:`convert_torchvision_mobilenet_v2`.
        input_size: side ``S`` of the square input; any size, the weights do
            not depend on it.

    Keras 3 ``.weights.h5`` files are keyed by layer type and order, not by
    layer name: load the file into this backbone (as here), then build heads
    on its outputs, rather than into a larger model.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{weights_path} not found; write it with facegrid.model.from_torchvision.convert_torchvision_mobilenet_v2"
        )
    model = torchvision_compatible_mobilenet_v2(input_size)
    model.load_weights(weights_path)
    return model


def narrowed(backbone, weights_path: str | Path) -> None:
    """Give ``backbone`` (a :func:`torchvision_compatible_mobilenet_v2` of alpha 1.0 or less) ImageNet weights.

    Each layer takes the first channels of the alpha-1.0 weights in
    ``weights_path``, in and out alike, so every kept channel still meets the
    channels it was trained with (a block's output channel ``k`` feeds the
    next block's input channel ``k``, the residual sums included): a slimmer
    network that starts from ImageNet features, for a larger input in the
    same time.

    Raises:
        ValueError: a layer wider than its alpha-1.0 counterpart (alpha above 1.0).
    """
    full = load_torchvision_mobilenet_v2(weights_path, None)
    for layer in backbone.layers:
        if not layer.weights:
            continue
        source = full.get_layer(layer.name).get_weights()
        kept = []
        for wide, narrow in zip(source, layer.get_weights(), strict=True):
            if any(n > w for n, w in zip(narrow.shape, wide.shape, strict=True)):
                raise ValueError(f"{layer.name}: {narrow.shape} is wider than the ImageNet weights' {wide.shape}")
            kept.append(wide[tuple(slice(0, n) for n in narrow.shape)])
        layer.set_weights(kept)
