"""Parameters, multiply-accumulates and single-image latency of facegrid detectors at their detection size.

    python benchmarks/model_cost.py [--model PATH ...] [--size 320x224] [--threads 1]

MACs are counted from each convolution's output shape (a dense layer would
count the same way; pooling, activations and additions are not counted), for
one input of the given size (default: a 4:3 image fitted to the model's
detection size, as WIDER images mostly are). Latency is the network alone,
the median of 30 runs after a warm-up, on a fixed uint8 input.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def conv_macs(model, x: np.ndarray) -> int:
    """Multiply-accumulates of every Conv2D / DepthwiseConv2D in ``model`` (nested models included) for input ``x``."""
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    convolutions = [layer for layer in model.layers if isinstance(layer, kinds)]
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    fed = [layer._inbound_nodes[-1].input_tensors[0] for layer in nested]  # what this graph passes each nested model
    probe = keras.Model(model.inputs, [layer.output for layer in convolutions] + fed)
    outputs = probe.predict(x, verbose=0)
    # a kernel (kh, kw, in, out) -- or (kh, kw, in, multiplier) when depthwise -- costs its size at every output cell
    total = sum(
        int(np.prod(out.shape[1:3])) * int(np.prod(layer.kernel.shape)) for layer, out in zip(convolutions, outputs)
    )
    return total + sum(conv_macs(inner, inputs) for inner, inputs in zip(nested, outputs[len(convolutions) :]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="a .keras detector (default: the bundled one)")
    parser.add_argument("--size", help="WIDTHxHEIGHT of the input (default: 4:3 at the detection size)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from facegrid.data.geometry import padded_size
    from facegrid.infer.detector import Detector

    print(f"| model | input | parameters | MMACs | network ms ({args.threads} thread) |")
    print("|---|---|---|---|---|")
    for path in args.model or [None]:
        detector = Detector.load(path)
        if args.size:
            width, height = map(int, args.size.split("x"))
        elif detector.codec is not None:
            width, height = padded_size(detector.input_size, round(detector.input_size * 3 / 4))
        else:
            width = height = detector.input_size
        x = np.full((1, height, width, 3), 128, np.uint8)
        macs = conv_macs(detector.model, x)
        run = tf.function(detector.model)
        for _ in range(3):
            run(x)
        times = []
        for _ in range(30):
            start = time.perf_counter()
            np.asarray(run(x))
            times.append(time.perf_counter() - start)
        name = path or "bundled"
        print(
            f"| {name} | {width}x{height} | {detector.model.count_params():,} | {macs / 1e6:.0f} | "
            f"{1000 * np.median(times):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
