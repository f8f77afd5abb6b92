"""Training steps per second on one process and on two workers over loopback, and what one step moves between workers.

    python benchmarks/distributed.py [--steps 8] [--warmup 2] [--passes 3] [--threads N]

The bundled model's recipe at full size (``facegrid-wider.toml``: 256 x 256
input, pyramid strides 8, 16 and 32, MobileNetV2 width 1.0, global batch 16,
AdamW), trained by facegrid's own :class:`~facegrid.train.loop.TrainingLoop`
on one fixed batch (the bundled sample images, augmented once and repeated
to the global batch), so that the timing is the step and not the input.
Variants, each in fresh processes, interleaved pass by pass:

  one process     the default strategy, ``--threads`` intra-op threads
  2 workers       two processes under MultiWorkerMirroredStrategy on loopback
                  (TF_CONFIG), ``--threads`` / 2 intra-op threads each, each
                  computing half of every global batch
  2 workers, Keras' synchronised batch norm
                  the same with Keras' own ``BatchNormalization.synchronized``
                  moments (three all-reduces a layer) instead of facegrid's
                  (:func:`~facegrid.train.loop.global_moments`, one)
  2 workers, batch norm not synchronised
                  the same with ``BatchNormalization.synchronized`` off (each
                  worker normalises by its own half-batch): what the
                  synchronisation's small all-reduces cost; not how facegrid trains

Each process times ``--steps`` steps after ``--warmup`` (tracing, start-up);
the table shows the medians of the step times over all passes. From the same
start (the bundled model's weights), the weights after those steps are compared with one
process's: the largest difference, and the gap between the two updates
relative to one process's update (batch-norm statistics included), per pass.

Then what a step moves between workers, counted two ways: from the model
(every trainable variable's gradient in float32, the all-reduce payload; per
synchronised BatchNormalization layer one all-reduce of its channels' sums
and sums of squares and its count; the positive cells' count), and from the
collective ops of the step the two workers traced (every all-reduce, the
backward pass's included). Last, how long a ring all-reduce of that payload
takes on 10, 25 and 100 Gbit/s links: each worker sends and receives
2 (n - 1) / n times the bytes, for n = 2, 4 and 8 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline import machine

LINKS_GBIT = (10, 25, 100)
WORKER_COUNTS = (2, 4, 8)
COLLECTIVES = ("CollectiveReduceV2", "CollectiveReduceV3", "CollectiveReduce")
CENSUS = {
    "gradients": "gradients, packed by the strategy",
    "batch norm, forward": "BatchNormalization sync, forward: sums, sums of squares, count",
    "batch norm, backward": "BatchNormalization sync, backward: gradients of the sums",
    "scalars": "single values: positive cells; score and box terms and images the step reports",
}
VARIANTS = {
    "default": "one process, default strategy",
    "fit": "one process, Keras' fit (as facegrid trained before its own loop)",
    "worker": "2 workers on loopback, multi-worker",
    "keras-sync": "2 workers, Keras' synchronised batch norm",
    "unsynced": "2 workers, batch norm not synchronised",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="steps timed in each process")
    parser.add_argument("--warmup", type=int, default=2, help="steps run before timing")
    parser.add_argument("--passes", type=int, default=3, help="runs of each variant, interleaved")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="cores the variants share")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)  # a child's weights, before and after, to this .npz
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1 (the first step traces the graph)")
    return args


def recipe():
    from facegrid.core.config import load_config, settings_path
    from facegrid.core.resources import bundled_model_path

    return load_config(settings_path(bundled_model_path()))


def fixed_batch(config):
    """The sample images, augmented and encoded as training sees them, tiled to the global batch."""
    import numpy as np

    from facegrid.core.resources import sample_dataset
    from facegrid.data.tf.choose import pipeline_for
    from facegrid.wider.index import FaceFilter

    annotations, images = sample_dataset()
    sequence = pipeline_for(
        config.replace(pipeline="sequence", batch_size=4), annotations, images, FaceFilter(config.min_face_size)
    )
    x, y = sequence[0]
    repeats = -(-config.batch_size // len(x))
    return np.concatenate([x] * repeats)[: config.batch_size], np.concatenate([y] * repeats)[: config.batch_size]


def layers(model):
    """Every layer of ``model``, those of nested models (the backbone) included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from layers(layer)


def collective_census(graph, model_scope: str, gradient_elements: int) -> dict[str, list[int]]:
    """The all-reduce ops of a traced step, by what they carry: ``{what: [ops, bytes]}``.

    The strategy flattens every reduced tensor. Those under the model's name
    scope are batch normalisation's forward sums; one of ``gradient_elements``
    (every trainable variable) is the gradients, packed into one; single
    values are the positives and what the step reports; the rest, outside
    the model's scope, are the gradients of batch normalisation's sums.
    """
    census = {what: [0, 0] for what in CENSUS}
    for op in graph.get_operations():
        if op.type not in COLLECTIVES:
            continue
        elements = op.inputs[0].shape.num_elements()
        if elements == 1:
            what = "scalars"
        elif re.match(rf"{re.escape(model_scope)}(_\d+)?/", op.name):  # the scope, made unique in the graph
            what = "batch norm, forward"
        elif elements == gradient_elements:
            what = "gradients"
        else:
            what = "batch norm, backward"
        census[what][0] += 1
        census[what][1] += elements * op.inputs[0].dtype.size
    return census


def run_child(variant: str, threads: int, steps: int, warmup: int, save: str | None) -> dict:
    """Time ``steps`` training steps after ``warmup`` in this process, as :data:`VARIANTS` ``variant`` runs them.

    With ``save``, the chief (or only process) writes its weights before and after to that ``.npz``.
    """
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    workers = variant not in ("default", "fit")
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers else tf.distribute.get_strategy()
    import time

    import keras

    from facegrid.core.resources import bundled_model_path
    from facegrid.model.loss import loss_for
    from facegrid.model.network import build_detector, load_detector
    from facegrid.train.loop import TrainingLoop, synchronise_batch_norm

    config = recipe()
    keras.utils.set_random_seed(config.seed)
    x, y = fixed_batch(config)
    with strategy.scope():
        model = build_detector(config)
        model.set_weights(load_detector(bundled_model_path()).get_weights())  # trained weights, as fine-tuning starts
        optimizer = keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
        model.compile(optimizer=optimizer, loss=loss_for(config))
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(data.with_options(options)))
    loop = TrainingLoop(model, strategy)
    start = [np.asarray(w) for w in model.weights]
    if variant == "unsynced":
        synchronise_batch_norm(model, 1)  # before the step is traced: each worker's statistics its own
    if variant == "keras-sync":  # Keras' own moments of the global batch: three all-reduces a layer
        for layer in layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                del layer._moments

    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):  # after the step's results reached Python
            ends.append(time.perf_counter())

    if variant == "fit":  # the same step under Keras' own loop: loss divided by the batch's positives
        model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[Clock()], verbose=0)
    else:
        loop.fit(lambda epoch: iterator, epochs=1, steps=warmup + steps, callbacks=[Clock()], verbose=0)
    chief = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0) == 0
    if save and chief:
        end = [np.asarray(w) for w in model.weights]
        np.savez(save, **{f"start_{k}": w for k, w in enumerate(start)}, **{f"end_{k}": w for k, w in enumerate(end)})
    batch = next(iterator)
    result = {
        "times": [b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:])],
        "local_batch": int(strategy.experimental_local_results(batch[0])[0].shape[0]),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }
    if workers:
        traced = loop._step.get_concrete_function(iterator).graph  # the step the loop runs, as traced
        elements = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
        result["census"] = collective_census(traced, model.name, elements)
    return result


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def environment(**extra) -> dict:
    source = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def run_variant(variant: str, args, save: Path) -> dict:
    """One pass of ``variant``: what its chief (or only) process printed; its weights before and after in ``save``."""
    processes = 1 if variant in ("default", "fit") else 2
    cluster = [f"localhost:{port}" for port in free_ports(processes)]
    command = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--save", str(save)]
    command += ["--threads", str(max(1, args.threads // processes))]
    children = []
    for index in range(processes):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        env = environment(TF_CONFIG=json.dumps(tf_config)) if processes > 1 else environment()
        children.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [child.communicate(timeout=900) for child in children]
    finally:
        for child in children:
            child.kill()
    for child, (_, stderr) in zip(children, outputs):
        if child.returncode:
            raise RuntimeError(f"{VARIANTS[variant]}: a process failed:\n{stderr[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def model_payload() -> list[tuple[str, int, int]]:
    """``(what, all-reduces, bytes)`` one step reduces across workers, counted from the recipe's model."""
    import keras

    from facegrid.model.network import build_detector

    model = build_detector(recipe())
    variables = model.trainable_variables
    gradient_bytes = sum(int(v.shape.num_elements()) for v in variables) * 4
    norms = [layer for layer in layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    channels = sum(int(layer.gamma.shape[0]) for layer in norms)
    return [
        (f"gradients: {len(variables)} trainable variables, float32", len(variables), gradient_bytes),
        (
            f"BatchNormalization sync: {len(norms)} layers, {channels:,} channels, 2 floats each and a count",
            len(norms),
            4 * (2 * channels + len(norms)),
        ),
        ("positive cells of the global batch: one float32", 1, 4),
    ]


def weight_gap(workers: Path, one: Path) -> tuple[float, float, float]:
    """``(largest difference, largest change in one process, ||update gap|| / ||one process's update||)``."""
    import numpy as np

    with np.load(workers) as a, np.load(one) as b:
        count = len(a.files) // 2
        if any(not np.array_equal(a[f"start_{k}"], b[f"start_{k}"]) for k in range(count)):
            raise RuntimeError("the variants did not start from the same weights")
        ends = [(a[f"end_{k}"], b[f"end_{k}"], b[f"start_{k}"]) for k in range(count)]
    largest = max(float(np.max(np.abs(x - y))) for x, y, _ in ends)
    moved = max(float(np.max(np.abs(y - s))) for _, y, s in ends)
    gap = np.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y, _ in ends))
    update = np.sqrt(sum(float(np.sum((y - s) ** 2)) for _, y, s in ends))
    return largest, moved, gap / update


def megabytes(size: int) -> str:
    return f"{size:,} ({size / 1e6:.2f} MB)"


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.threads, args.steps, args.warmup, args.save)))
        return 0
    config = recipe()
    order = list(VARIANTS)
    times = {variant: [] for variant in order}
    per_pass = {variant: [] for variant in order}
    local, census, census_keras, gpus = {}, None, None, 0
    gaps = {variant: [] for variant in ("worker", "keras-sync", "unsynced")}
    saved = Path(tempfile.mkdtemp(prefix="facegrid-distributed-"))
    for number in range(args.passes):
        for variant in order if number % 2 == 0 else order[::-1]:
            result = run_variant(variant, args, saved / f"{variant}.npz")
            times[variant] += result["times"]
            per_pass[variant].append(statistics.median(result["times"]))
            local[variant] = result["local_batch"]
            gpus = max(gpus, result["gpus"])
            census = result.get("census", census) if variant == "worker" else census
            census_keras = result.get("census") if variant == "keras-sync" else census_keras
            print(f"pass {number + 1}: {VARIANTS[variant]}: {1 / per_pass[variant][-1]:.3f} steps/s", file=sys.stderr)
        for variant in gaps:
            gaps[variant].append(weight_gap(saved / f"{variant}.npz", saved / "default.npz"))
    shutil.rmtree(saved, ignore_errors=True)

    print(
        f"Machine: {machine()}, {f'{gpus} GPU(s)' if gpus else 'no GPU'}.\nThe bundled recipe: {config.input_size} x "
        f"{config.input_size}, strides {list(config.strides)}, alpha {config.alpha}, global batch {config.batch_size}; "
        f"{args.steps} steps timed after {args.warmup} in each process, {args.passes} passes interleaved, "
        "medians over all timed steps.\n"
    )
    base = statistics.median(times["default"])
    print("| variant | threads a process | images a replica | step | steps/s | images/s | steps/s by pass | speed |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in order:
        step = statistics.median(times[variant])
        threads = max(1, args.threads // (1 if variant in ("default", "fit") else 2))
        passes = ", ".join(f"{1 / t:.3f}" for t in per_pass[variant])
        print(
            f"| {VARIANTS[variant]} | {threads} | {local[variant]} | {step * 1000:,.0f} ms | {1 / step:.3f} | "
            f"{config.batch_size / step:.1f} | {passes} | {base / step:.2f}x |"
        )

    print(f"\nThe weights after {args.warmup + args.steps} steps from the same start, against one process's:\n")
    print("| variant | largest difference | largest change in one process | update gap (relative) |")
    print("|---|---|---|---|")
    for variant, rows in gaps.items():
        for number, (largest, moved, gap) in enumerate(rows, 1):
            print(f"| {VARIANTS[variant]}, pass {number} | {largest:.2e} | {moved:.2e} | {gap:.2e} |")

    rows = model_payload()
    print("\nWhat one step all-reduces between workers (per worker, whatever their number):\n")
    print("| payload | all-reduces | bytes |")
    print("|---|---|---|")
    for what, count, size in rows:
        print(f"| {what} | {count} | {megabytes(size)} |")
    total = sum(size for _, _, size in rows)
    print(f"| total counted from the model | {sum(count for _, count, _ in rows)} | {megabytes(total)} |")
    moved = total
    if census:
        for what, (count, size) in census.items():
            print(f"| traced step: {CENSUS[what]} | {count} | {megabytes(size)} |")
        moved = sum(size for _, size in census.values())
        count = sum(count for count, _ in census.values())
        print(f"| traced step, total | {count} | {megabytes(moved)} |")
    if census_keras:
        size = sum(size for _, size in census_keras.values())
        count = sum(count for count, _ in census_keras.values())
        print(f"| traced step with Keras' synchronised batch norm, total | {count} | {megabytes(size)} |")

    print(
        f"\nRing all-reduce of {moved / 1e6:.2f} MB a step: each worker sends and receives 2 (n - 1) / n times "
        "the bytes; wire time alone (no per-message latency, no overlap with compute):\n"
    )
    print("| link | " + " | ".join(f"n = {n}" for n in WORKER_COUNTS) + " |")
    print("|---|" + "---|" * len(WORKER_COUNTS))
    for gbit in LINKS_GBIT:
        cells = [2 * (n - 1) / n * moved * 8 / (gbit * 1e9) * 1000 for n in WORKER_COUNTS]
        print(f"| {gbit} Gbit/s | " + " | ".join(f"{ms:.1f} ms" for ms in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
