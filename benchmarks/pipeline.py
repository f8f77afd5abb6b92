"""Input pipeline throughput: facegrid's two pipelines against the 2019 tutorial's generator.

On the WIDER FACE train images present (../shared/data/widerface, or
$FACEGRID_WIDER), in one run, interleaved: every pass runs every variant once,
each in a fresh child process (so peak RSS is its own), and the table shows
medians over passes, in images/s, with 1 and 2 workers, standalone (batches
pulled as fast as possible) and through ``model.fit`` of a one-layer model.

Variants:
  tutorial      the tutorial's keras Sequence, re-created: load_img for the size,
                load_img again at 224, img_to_array, preprocess_input whose
                result goes unused (float32 batches); one sample per image
                (the tutorial made one per face: slower still per image)
  tf.data plain read_file + full decode_jpeg + resize, targets computed up front
  FaceSequence  facegrid.FaceSequence (threads; "procs": worker processes)
  FacePipeline  facegrid.data.tf.pipeline.FacePipeline
  floor: ...    the fastest decode-and-resize this machine runs, no targets:
                simplejpeg at a power-of-two DCT scale + OpenCV resize in a
                thread pool, and TensorFlow's decode_jpeg(ratio) + resize;
                through fit, the simplejpeg floor as a keras.utils.PyDataset
                (threads) with all-zero targets: the most any PyDataset gets

Through fit: a one-layer model, so that the figures are about the input
pipeline. By default (``--fit-model pool``) the 224x224 input is average-pooled
to the 7x7 grid and one 1x1 Conv2D (5 filters) is trained: its step costs
about 0.3 ms of CPU per image. ``--fit-model conv`` trains one Conv2D with a
32x32 kernel and stride 32 instead, whose backward pass alone costs about
0.9 ms of CPU per image on CPUs, over half a JPEG decode, and so narrows every
ratio. Each fit runs 4 epochs; the first (tracing, start-up) is not timed.

Also: peak RSS of a full pass over the train images and over the same images
listed ten times, and the parse time of the full official train annotation file.

    python benchmarks/pipeline.py [--passes 3] [--limit N] [--fit-model pool|conv]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_WIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"
SIZE, GRID = 224, 7
BATCH = int(os.environ.get("BENCH_BATCH", 16))

VARIANTS = ["tutorial", "tfdata-plain", "sequence", "sequence-procs", "pipeline", "floor-simplejpeg", "floor-tf"]
LABELS = {
    "tutorial": "tutorial generator",
    "tfdata-plain": "tf.data plain",
    "sequence": "FaceSequence (threads)",
    "sequence-procs": "FaceSequence (processes)",
    "pipeline": "FacePipeline (tf.data)",
    "floor-simplejpeg": "floor: simplejpeg + OpenCV",
    "floor-tf": "floor: TF decode(ratio) + resize",
}
FIT_VARIANTS = ["tutorial", "tfdata-plain", "sequence", "sequence-procs", "pipeline", "floor-simplejpeg"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wider", default=os.environ.get("FACEGRID_WIDER", DEFAULT_WIDER), type=Path)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--limit", type=int, help="use only the first N train images")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--fit-model", choices=("pool", "conv"), default="pool", help="the one-layer model fit trains")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # VARIANT:MODE:WORKERS[:REPEAT]
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- variants (run in a child)


def targets_for(index, images, codec):
    """Grid targets of every image at the network size (no augmentation), for the plain tf.data baseline."""
    from facegrid.data.images import image_size

    ys = np.zeros((len(index), *codec.shape), np.float32)
    for i in range(len(index)):
        width, height = image_size(images / str(index.paths[i]))
        scale = np.array([SIZE / width, SIZE / height] * 2, np.float32)
        ys[i] = codec.encode(index.image_boxes(i) * scale, SIZE, SIZE)
    return ys


def tutorial_dataset(index, images, workers, use_multiprocessing):
    """The tutorial's generator: load_img twice per image (size, then 224) and float32 batches."""
    import keras

    from facegrid.core.codec import GridCodec

    codec = GridCodec(GRID)

    class TutorialSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=use_multiprocessing)

        def __len__(self):
            return math.ceil(len(index) / BATCH)

        def __getitem__(self, i):
            rows = range(i * BATCH, min((i + 1) * BATCH, len(index)))
            x = np.zeros((len(rows), SIZE, SIZE, 3), np.float32)
            y = np.zeros((len(rows), *codec.shape), np.float32)
            for k, row in enumerate(rows):
                path = str(images / str(index.paths[row]))
                width, height = keras.utils.load_img(path).size
                pixels = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(SIZE, SIZE)))
                keras.applications.mobilenet_v2.preprocess_input(pixels)  # its return value unused, as there
                x[k] = pixels
                scale = np.array([SIZE / width, SIZE / height] * 2, np.float32)
                y[k] = codec.encode(index.image_boxes(row) * scale, SIZE, SIZE)
            return x, y

    return TutorialSequence()


def plain_tfdata(index, images, workers):
    import tensorflow as tf

    from facegrid.core.codec import GridCodec

    ys = targets_for(index, images, GridCodec(GRID))
    paths = [str(images / str(p)) for p in index.paths.tolist()]

    def load(path, y):
        pixels = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.image.resize(pixels, (SIZE, SIZE)), tf.uint8), y

    return (
        tf.data.Dataset.from_tensor_slices((paths, ys)).map(load, num_parallel_calls=workers).batch(BATCH).prefetch(2)
    )


def floor_tf(paths, workers):
    import tensorflow as tf

    from facegrid.data.images import DCT_RATIOS, dct_ratio, probe

    ratios = [DCT_RATIOS.index(dct_ratio(i.width, i.height, SIZE, SIZE)) for i in map(probe, paths)]

    def load(path, ratio):
        data = tf.io.read_file(path)
        pixels = tf.switch_case(ratio, [(lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r)) for r in DCT_RATIOS])
        return tf.cast(tf.image.resize(pixels, (SIZE, SIZE)), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices((paths, ratios)).map(load, num_parallel_calls=workers).batch(BATCH)
    return ds.prefetch(2)


def simplejpeg_load(path):
    """One image as fast as this machine decodes and resizes it: simplejpeg at the power-of-two DCT
    scale covering the input, then an OpenCV bilinear resize."""
    import cv2
    import simplejpeg

    from facegrid.data.images import dct_ratio

    data = Path(path).read_bytes()
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    ratio = dct_ratio(width, height, SIZE, SIZE)
    pixels = simplejpeg.decode_jpeg(data, min_width=math.ceil(width / ratio), min_height=math.ceil(height / ratio))
    return cv2.resize(pixels, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def floor_simplejpeg(paths, workers):
    """Batches of :func:`simplejpeg_load` images from a thread pool, no targets."""
    from concurrent.futures import ThreadPoolExecutor

    def batches():
        with ThreadPoolExecutor(workers) as pool:
            loaded = pool.map(simplejpeg_load, paths)
            for start in range(0, len(paths), BATCH):
                yield np.stack([next(loaded) for _ in paths[start : start + BATCH]])

    return batches


def floor_pydataset(paths, workers):
    """The fastest PyDataset built here, for fit: :func:`simplejpeg_load` images into uint8 batches,
    all-zero targets (no annotations read, no targets computed)."""
    import keras

    class FloorSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers)

        def __len__(self):
            return math.ceil(len(paths) / BATCH)

        def __getitem__(self, i):
            chosen = paths[i * BATCH : (i + 1) * BATCH]
            x = np.empty((len(chosen), SIZE, SIZE, 3), np.uint8)
            for k, path in enumerate(chosen):
                x[k] = simplejpeg_load(path)
            return x, np.zeros((len(chosen), GRID, GRID, 5), np.float32)

    return FloorSequence()


_SHARED = None  # the PyDataset, in worker processes


def _share(dataset):
    global _SHARED
    _SHARED = dataset


def _batch(i):
    return _SHARED[i]


def iterate_pydataset(dataset, workers, processes):
    """Pull every batch of a PyDataset with ``workers`` threads or processes, in order."""
    if processes:
        from multiprocessing import get_context

        # as keras.utils.PyDataset's process workers: the dataset is handed over once, then batch numbers
        pool = get_context().Pool(workers, initializer=_share, initargs=(dataset,))
        pulled = pool.imap(_batch, range(len(dataset)))
    else:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers)
        pulled = pool.map(dataset.__getitem__, range(len(dataset)))
    try:
        yield from pulled
    finally:
        pool.terminate() if processes else pool.shutdown()


def one_layer_model(dtype, kind):
    import keras

    cell = SIZE // GRID
    if kind == "pool":
        layers = [keras.layers.AveragePooling2D(cell), keras.layers.Conv2D(5, 1)]
    else:
        layers = [keras.layers.Conv2D(5, cell, strides=cell)]
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3), dtype=dtype), keras.layers.Rescaling(1 / 127.5, -1.0), *layers]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


class EpochTimer:
    """Keras callback recording each epoch's wall time."""

    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                self.times.append(time.perf_counter() - self.start)

        self.times: list[float] = []
        self.callback = Callback()


FIT_EPOCHS = 4


def run_child(spec: str, wider: Path, limit: int | None, fit_model: str) -> dict:
    """Measure one variant once; returns images/s and peak RSS."""
    variant, mode, workers, *rest = spec.split(":")
    workers, repeat = int(workers), int(rest[0]) if rest else 1
    from facegrid.wider.annotations import read_annotations

    images = wider / "WIDER_train" / "images"
    index = read_annotations(wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    if limit:
        index = index.take(np.arange(min(limit, len(index))))
    if repeat > 1:
        index = index.take(np.tile(np.arange(len(index)), repeat))
    n = len(index)
    paths = [str(images / str(p)) for p in index.paths.tolist()]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if variant == "tutorial":
        data = tutorial_dataset(index, images, workers, False)
    elif variant in ("sequence", "sequence-procs"):
        from facegrid.data.sequence import FaceSequence

        data = FaceSequence(
            index,
            images,
            batch_size=BATCH,
            shuffle=False,
            workers=workers,
            use_multiprocessing=variant == "sequence-procs",
        )
    elif variant == "pipeline":
        from facegrid.data.tf.pipeline import FacePipeline

        pipeline = FacePipeline(index, images, batch_size=BATCH, shuffle=False, parallel_calls=workers)
        data = pipeline.dataset(epochs=FIT_EPOCHS if mode == "fit" else 1)
    elif variant == "tfdata-plain":
        data = plain_tfdata(index, images, workers)
    elif variant == "floor-tf":
        data = floor_tf(paths, workers)
    elif variant == "floor-simplejpeg":
        data = floor_pydataset(paths, workers) if mode == "fit" else floor_simplejpeg(paths, workers)
    else:
        raise SystemExit(f"unknown variant {variant}")

    if mode == "fit":
        timer = EpochTimer()
        model = one_layer_model("float32" if variant == "tutorial" else "uint8", fit_model)
        steps = math.ceil(n / BATCH) if variant == "pipeline" else None
        model.fit(data, epochs=FIT_EPOCHS, steps_per_epoch=steps, callbacks=[timer.callback], shuffle=False, verbose=0)
        seconds = sum(timer.times[1:])  # the first epoch includes tracing and worker start-up
        n *= FIT_EPOCHS - 1
    else:
        if variant in ("tutorial", "sequence", "sequence-procs"):
            batches = iterate_pydataset(data, workers, processes=variant == "sequence-procs")
        elif variant == "floor-simplejpeg":
            batches = data()
        else:
            batches = iter(data)
        start, count = None, 0
        for k, batch in enumerate(batches):
            if k == 0:  # start the clock once the first batch arrives (start-up excluded)
                start = time.perf_counter()
                continue
            count += len(batch[0] if isinstance(batch, tuple) else batch)
        seconds = time.perf_counter() - start
        n = count
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "images_per_s": n / seconds,
        "images": n,
        "peak_rss_mb": usage,
        "rss_at_start_mb": rss_before,
        "worker_peak_rss_mb": children,
    }


# --------------------------------------------------------------------------- parent


def child(spec: str, args) -> dict:
    command = [sys.executable, __file__, "--child", spec, "--wider", str(args.wider), "--fit-model", args.fit_model]
    if args.limit:
        command += ["--limit", str(args.limit)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PARSE_REPEATS = 9


def parse_time(wider: Path) -> float:
    from facegrid.wider.annotations import read_annotations

    path = wider / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    read_annotations(path)  # warm the page cache
    times = []
    for _ in range(PARSE_REPEATS):
        start = time.perf_counter()
        read_annotations(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.wider, args.limit, args.fit_model)))
        return 0
    if not (args.wider / "WIDER_train" / "images").is_dir():
        print(f"WIDER FACE data not found at {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2

    specs = [f"{v}:standalone:{w}" for v in VARIANTS for w in (1, 2)]
    specs += [f"{v}:fit:{w}" for v in FIT_VARIANTS for w in (1, 2)]
    results: dict[str, list[dict]] = {spec: [] for spec in specs}
    print(f"machine: {machine()}", flush=True)
    parses = []
    for p in range(args.passes):
        parses.append(parse_time(args.wider))  # between children, as every other figure
        order = specs if p % 2 == 0 else specs[::-1]  # interleaved, alternating direction
        for spec in order:
            results[spec].append(child(spec, args))
            print(
                f"pass {p + 1}/{args.passes} {spec}: {results[spec][-1]['images_per_s']:.0f} images/s",
                file=sys.stderr,
                flush=True,
            )

    def median(spec, key="images_per_s"):
        return statistics.median(r[key] for r in results[spec]) if results.get(spec) else float("nan")

    base = {mode: {w: median(f"tutorial:{mode}:{w}") for w in (1, 2)} for mode in ("standalone", "fit")}
    print(
        f"\nimages/s, median of {args.passes} passes ({results[specs[0]][0]['images']} train images, batch {BATCH}, "
        f"{SIZE}x{SIZE}; fit: {args.fit_model} model, epochs 2-{FIT_EPOCHS}); "
        "x = ratio to the tutorial generator in the same column\n"
    )
    columns = ("standalone 1", "standalone 2", "fit 1", "fit 2")
    header = f"{'variant':34s} " + " ".join(f"{name:>16s}" for name in columns) + f" {'peak RSS MB':>12s}"
    print(header)
    print("-" * len(header))
    for variant in VARIANTS:
        cells = []
        for mode in ("standalone", "fit"):
            for w in (1, 2):
                spec = f"{variant}:{mode}:{w}"
                if spec in results:
                    rate = median(spec)
                    cells.append(f"{rate:7.0f} ({rate / base[mode][w]:4.2f}x)")
                else:
                    cells.append("")
        rss = max(r["peak_rss_mb"] for spec in results if spec.startswith(variant + ":") for r in results[spec])
        print(f"{LABELS[variant]:34s} " + " ".join(f"{c:>16s}" for c in cells) + f" {rss:12.0f}")

    floor = {w: max(median(f"floor-simplejpeg:standalone:{w}"), median(f"floor-tf:standalone:{w}")) for w in (1, 2)}
    print("\nstandalone, share of the fastest decode-and-resize (the better floor):")
    for variant in ("sequence", "pipeline"):
        print(
            f"  {LABELS[variant]:32s} "
            + "  ".join(f"{w} worker(s): {median(f'{variant}:standalone:{w}') / floor[w]:.0%}" for w in (1, 2))
        )
    print("through fit, FaceSequence's share of the PyDataset floor (simplejpeg + OpenCV, no targets):")
    print(
        "  "
        + "  ".join(
            f"{w} worker(s): {median(f'sequence:fit:{w}') / median(f'floor-simplejpeg:fit:{w}'):.0%}" for w in (1, 2)
        )
    )

    print("\npeak RSS over a full standalone pass, train images listed once vs ten times (2 workers):")
    scaling = {}
    for variant in ("sequence", "pipeline"):
        one, ten = child(f"{variant}:standalone:2:1", args), child(f"{variant}:standalone:2:10", args)
        scaling[variant] = (one, ten)
        print(
            f"  {LABELS[variant]:32s} 1x {one['peak_rss_mb']:6.0f} MB ({one['images']} images)   "
            f"10x {ten['peak_rss_mb']:6.0f} MB ({ten['images']} images)   "
            f"growth {ten['peak_rss_mb'] - one['peak_rss_mb']:+.0f} MB"
        )

    seconds = statistics.median(parses)
    print(
        f"\nparse of the full official train annotation file (12,880 images): {seconds * 1000:.0f} ms "
        f"(median over passes of the median of {PARSE_REPEATS} each: "
        + ", ".join(f"{t * 1000:.0f}" for t in parses)
        + " ms)"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "scaling": scaling, "parse_s": parses}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
