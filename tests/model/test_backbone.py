"""The torchvision-compatible MobileNetV2 backbone and the torchvision -> Keras weight mapping.

No torch here: the state dicts are synthetic, numpy arrays with torchvision's
names and shapes, built from torchvision's own block table rather than from
the mapping under test. ``benchmarks/check_pretrained.py`` compares against
torchvision itself.
"""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from facegrid.core.files import sha256_file
from facegrid.core.resources import bundled_backbone_path
from facegrid.model import from_torchvision
from facegrid.model.backbone import (
    BN_EPSILON,
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    load_torchvision_mobilenet_v2,
    narrowed,
    torchvision_compatible_mobilenet_v2,
)
from facegrid.model.from_torchvision import (
    TORCHVISION_SHA256,
    assign_torchvision_state_dict,
    convert_torchvision_mobilenet_v2,
)

# torchvision.models.mobilenet_v2's inverted_residual_setting: t, c, n, s.
TORCHVISION_BLOCKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def torchvision_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under every name, with every shape, of torchvision's mobilenet_v2 state dict."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(name, out, inp, k):
        state[f"{name}.weight"] = rng.standard_normal((out, inp, k, k)).astype(np.float32)

    def bn(name, n):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
        state[f"{name}.bias"] = rng.standard_normal(n).astype(np.float32)
        state[f"{name}.running_mean"] = rng.standard_normal(n).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, n).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(1000, dtype=np.int64)

    conv("features.0.0", 32, 3, 3)
    bn("features.0.1", 32)
    index, inp = 1, 32
    for t, c, n, _ in TORCHVISION_BLOCKS:
        for _ in range(n):
            p = f"features.{index}.conv"
            hidden = inp * t
            layers = [] if t == 1 else [("expand", hidden, inp, 1)]
            layers += [("depthwise", hidden, 1, 3), ("project", c, hidden, 1)]
            for i, (kind, out, cin, k) in enumerate(layers):
                if kind == "project":  # a bare Conv2d then BatchNorm2d
                    conv(f"{p}.{i}", out, cin, k)
                    bn(f"{p}.{i + 1}", out)
                else:  # Conv2dNormActivation: .0 conv, .1 bn
                    conv(f"{p}.{i}.0", out, cin, k)
                    bn(f"{p}.{i}.1", out)
            index, inp = index + 1, c
    conv("features.18.0", 1280, 320, 1)
    bn("features.18.1", 1280)
    state["classifier.1.weight"] = rng.standard_normal((1000, 1280)).astype(np.float32)
    state["classifier.1.bias"] = rng.standard_normal(1000).astype(np.float32)
    return state


def backbone_names(state):
    return sorted(k for k in state if not k.startswith("classifier.") and "num_batches" not in k)


@pytest.fixture(scope="module")
def state():
    return torchvision_state_dict()


@pytest.fixture(scope="module")
def model():
    return torchvision_compatible_mobilenet_v2(224)


@pytest.fixture(scope="module")
def loaded(state):
    """A 96-pixel backbone holding the synthetic state dict."""
    m = torchvision_compatible_mobilenet_v2(96)
    used = assign_torchvision_state_dict(m, state)
    return m, used


def test_synthetic_state_dict_has_torchvisions_size(state):
    # 314 entries: 260 backbone tensors, 52 num_batches_tracked, the classifier's 2.
    assert len(state) == 314
    assert len(backbone_names(state)) == 260


def test_padding_is_symmetric_and_epsilon_is_torchvisions(model):
    pads = [layer for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert [layer.name for layer in pads] == [
        "Conv1_pad",
        "block_1_pad",
        "block_3_pad",
        "block_6_pad",
        "block_13_pad",
    ]
    for layer in pads:
        assert tuple(map(tuple, layer.padding)) == ((1, 1), (1, 1)), layer.name
    assert model.get_layer("Conv1").padding == "valid"
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == BN_EPSILON == 1e-5, layer.name
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            if layer.strides != (1, 1):
                # Strided 3x3 convs read the output of a symmetric *_pad layer.
                assert layer.padding == "valid", layer.name
                assert isinstance(layer.input._keras_history[0], keras.layers.ZeroPadding2D), layer.name
            elif layer.kernel_size == (3, 3):
                # Stride 1, odd kernel: 'same' pads 1 on every side, like torchvision.
                assert layer.padding == "same", layer.name


def test_same_layer_names_and_weights_as_keras_mobilenet_v2(model):
    stock = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None)
    ours = [layer.name for layer in model.layers[1:]]
    theirs = [layer.name for layer in stock.layers[1:]]
    assert [n for n in ours if n not in ("torchvision_normalize", "Conv1_pad")] == theirs
    assert ours[:3] == ["torchvision_normalize", "Conv1_pad", "Conv1"]
    assert [(w.path, tuple(w.shape)) for w in model.weights] == [(w.path, tuple(w.shape)) for w in stock.weights]
    assert len(model.weights) == 260
    for name in ("torchvision_normalize", "Conv1_pad"):
        assert model.get_layer(name).weights == []


@pytest.mark.parametrize(
    "size, final, block_6, block_13",
    [(224, 7, 28, 14), (448, 14, 56, 28), (225, 8, 29, 15)],
)
def test_output_sizes(size, final, block_6, block_13):
    m = torchvision_compatible_mobilenet_v2(size)
    assert m.output.shape == (None, final, final, 1280)
    assert m.get_layer("out_relu").output is m.output
    assert m.get_layer("block_6_expand_relu").output.shape == (None, block_6, block_6, 192)
    assert m.get_layer("block_13_expand_relu").output.shape == (None, block_13, block_13, 576)


def test_input_normalization_is_torchvisions_in_minus_one_one_space(model):
    layer = model.get_layer("torchvision_normalize")
    u = np.random.default_rng(1).uniform(-1, 1, (2, 5, 5, 3)).astype(np.float32)
    expected = ((u + 1) / 2 - np.array(TORCHVISION_MEAN)) / np.array(TORCHVISION_STD)
    np.testing.assert_allclose(np.asarray(layer(u)), expected, atol=1e-5)


def test_every_keras_weight_is_its_torchvision_tensor_transposed(loaded, state):
    m, used = loaded
    # Every backbone tensor used exactly once; classifier and counters ignored.
    assert sorted(used) == backbone_names(state)
    assert len(used) == len(set(used)) == len(m.weights)

    # Independently of the mapping: each Keras weight holds the values of
    # exactly one torchvision tensor (random values are unique).
    by_values = {np.sort(v, axis=None).tobytes(): k for k, v in state.items() if v.ndim}
    matched = [by_values[np.sort(np.asarray(w), axis=None).tobytes()] for w in m.weights]
    assert sorted(matched) == backbone_names(state)

    # And in the right layout.
    for variable, name in zip(m.weights, matched):
        source = state[name]
        value = np.asarray(variable)
        if source.ndim == 1:
            np.testing.assert_array_equal(value, source)
        elif isinstance(m.get_layer(variable.path.split("/")[0]), keras.layers.DepthwiseConv2D):
            np.testing.assert_array_equal(value, source.transpose(2, 3, 0, 1))  # [kh, kw, C, 1]
        else:
            np.testing.assert_array_equal(value, source.transpose(2, 3, 1, 0))  # [kh, kw, in, out]

    # Spot checks, written out by hand.
    def get(path):
        return np.asarray(next(w for w in m.weights if w.path == path))

    np.testing.assert_array_equal(get("Conv1/kernel"), state["features.0.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(get("bn_Conv1/moving_variance"), state["features.0.1.running_var"])
    np.testing.assert_array_equal(
        get("expanded_conv_depthwise/kernel"), state["features.1.conv.0.0.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(
        get("expanded_conv_project/kernel"), state["features.1.conv.1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(get("expanded_conv_project_BN/gamma"), state["features.1.conv.2.weight"])
    np.testing.assert_array_equal(
        get("block_1_expand/kernel"), state["features.2.conv.0.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        get("block_3_depthwise/kernel"), state["features.4.conv.1.0.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(get("block_16_project_BN/beta"), state["features.17.conv.3.bias"])
    np.testing.assert_array_equal(get("Conv_1/kernel"), state["features.18.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(get("Conv_1_bn/moving_mean"), state["features.18.1.running_mean"])


def test_first_stage_computes_torchvisions_conv_bn_relu6(loaded, state):
    """Normalise, pad 1 with zeros in torchvision's space, 3x3 stride 2, BN eps 1e-5, ReLU6: by hand in numpy."""
    m, _ = loaded
    u = np.random.default_rng(2).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    stage = keras.Model(m.input, m.get_layer("Conv1_relu").output)
    got = np.asarray(stage(u, training=False))

    x = ((u[0].astype(np.float64) + 1) / 2 - TORCHVISION_MEAN) / TORCHVISION_STD
    x = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    w = state["features.0.0.weight"].astype(np.float64)  # [out, in, kh, kw]
    y = np.zeros((48, 48, 32))
    for kh in range(3):
        for kw in range(3):
            y += x[kh : kh + 96 : 2, kw : kw + 96 : 2] @ w[:, :, kh, kw].T
    p = "features.0.1."
    y = (y - state[p + "running_mean"]) / np.sqrt(state[p + "running_var"] + 1e-5)
    y = np.clip(y * state[p + "weight"] + state[p + "bias"], 0, 6)
    assert got.shape == (1, 48, 48, 32)
    np.testing.assert_allclose(got[0], y, atol=1e-4)
    # Torchvision's border differs from Keras' stock (0, 1) padding: the first row and column matter.
    assert np.abs(y[0]).max() > 0 and np.abs(y[:, 0]).max() > 0


def _fresh(size=64):
    return torchvision_compatible_mobilenet_v2(size)


def test_missing_tensor_raises_and_assigns_nothing(state):
    m = _fresh()
    before = [np.asarray(w).copy() for w in m.weights]
    broken = dict(state)
    del broken["features.5.conv.1.1.running_var"]
    with pytest.raises(ValueError, match=r"missing .*features\.5\.conv\.1\.1\.running_var"):
        assign_torchvision_state_dict(m, broken)
    for w, b in zip(m.weights, before):
        np.testing.assert_array_equal(np.asarray(w), b)


def test_extra_tensor_raises(state):
    extra = dict(state)
    extra["features.19.0.weight"] = np.zeros((8, 1280, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"not used by the backbone: \['features\.19\.0\.weight'\]"):
        assign_torchvision_state_dict(_fresh(), extra)


def test_wrong_shape_raises(state):
    wrong = dict(state)
    wrong["features.18.0.weight"] = np.zeros((1280, 160, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"features\.18\.0\.weight.*Conv_1/kernel"):
        assign_torchvision_state_dict(_fresh(), wrong)


def test_classifier_and_counters_are_optional(state):
    backbone_only = {k: state[k] for k in backbone_names(state)}
    used = assign_torchvision_state_dict(_fresh(), backbone_only)
    assert len(used) == 260


def test_weights_file_round_trip_at_another_size(loaded, tmp_path):
    m, _ = loaded
    path = tmp_path / "mnv2.weights.h5"
    m.save_weights(path)
    other = load_torchvision_mobilenet_v2(path, 160)
    assert other.output.shape == (None, 5, 5, 1280)
    for a, b in zip(m.weights, other.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def bundled():
    return load_torchvision_mobilenet_v2(bundled_backbone_path(), 224)


@pytest.mark.parametrize("size", [256, 320])
def test_the_bundled_weights_load_at_other_input_sizes(bundled, size):
    other = load_torchvision_mobilenet_v2(bundled_backbone_path(), size)
    side = -(-size // 32)
    assert other(np.zeros((1, size, size, 3), np.float32)).shape == (1, side, side, 1280)
    for a, b in zip(bundled.weights, other.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert bundled(np.zeros((1, 224, 224, 3), np.float32)).shape == (1, 7, 7, 1280)


def test_a_narrower_backbone_starts_from_the_first_channels_of_every_bundled_layer(bundled):
    from facegrid.core.config import Config
    from facegrid.model.network import build_backbone

    narrow = build_backbone(Config(alpha=0.5))  # the default backbone_weights: the bundled ImageNet ones
    base = narrow.get_layer("Conv1").output.shape[-1], bundled.get_layer("Conv1").output.shape[-1]
    assert base == (16, 32)
    layers = [layer for layer in narrow.layers if layer.weights]
    assert len(layers) == len([layer for layer in bundled.layers if layer.weights])
    for layer in layers:
        for kept, whole in zip(layer.get_weights(), bundled.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(kept, whole[tuple(slice(0, n) for n in kept.shape)])
    # the kept channels of the first stage compute what they computed in the whole network
    image = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    first = [keras.Model(m.inputs, m.get_layer("Conv1_relu").output)(image) for m in (narrow, bundled)]
    np.testing.assert_allclose(np.asarray(first[0]), np.asarray(first[1])[..., :16], atol=1e-5)
    with pytest.raises(ValueError, match="wider than the ImageNet weights"):
        narrowed(torchvision_compatible_mobilenet_v2(None, alpha=1.4), bundled_backbone_path())


def test_the_bundled_weights_note_records_their_source_and_digest():
    note = bundled_backbone_path().with_suffix("").with_suffix(".md").read_text(encoding="utf-8")
    assert TORCHVISION_SHA256 in note and sha256_file(bundled_backbone_path()) in note


def test_load_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_torchvision_mobilenet_v2"):
        load_torchvision_mobilenet_v2(tmp_path / "nope.weights.h5", 224)


def test_convert_checks_name_and_checksum_before_needing_torch(tmp_path):
    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        convert_torchvision_mobilenet_v2(fake, tmp_path / "out.h5")
    with pytest.raises(ValueError, match="SHA-256"):
        convert_torchvision_mobilenet_v2(fake, tmp_path / "out.weights.h5")


def test_torchvision_prefix_names():
    assert from_torchvision.torchvision_prefix("Conv1") == "features.0.0"
    assert from_torchvision.torchvision_prefix("block_1_expand") == "features.2.conv.0.0"
    assert from_torchvision.torchvision_prefix("block_1_expand_BN") == "features.2.conv.0.1"
    assert from_torchvision.torchvision_prefix("block_16_depthwise") == "features.17.conv.1.0"
    assert from_torchvision.torchvision_prefix("block_16_project") == "features.17.conv.2"
    assert from_torchvision.torchvision_prefix("block_16_project_BN") == "features.17.conv.3"
    assert from_torchvision.torchvision_prefix("block_16_expand_relu") is None
    assert from_torchvision.torchvision_prefix("out_relu") is None


def test_importing_needs_neither_torch_nor_keras():
    code = (
        "import sys, facegrid.model.backbone; "
        "assert 'torch' not in sys.modules and 'keras' not in sys.modules, "
        "[m for m in sys.modules if m.split('.')[0] in ('torch', 'keras')][:3]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
