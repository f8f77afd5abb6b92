"""Sizing for datasets past one machine, from figures measured here: CPU per image, bytes per image, shard reads.

    python benchmarks/scaling.py [--annotations FILE --images DIR] [--packed DIR]
        [--worker-cores 16] [--input-size 224] [--limit 300]

Measures on this machine, single-threaded (CPU time, so a busy neighbour
counts little):
- bytes per stored image (the JPEG files as they are, what a packed shard holds);
- CPU ms per image to decode at the DCT scale facegrid uses and resize
  (``facegrid.data.geometry.load_input``), and to build a whole augmented training
  example with its targets (``FaceSequence``);
- the read rate of a packed shard through ``tf.data.TFRecordDataset``
  (``facegrid data pack``; the OS page cache warm, so an upper bound for disk).
Then a small model: for 1M, 10M and 100M images, the shards (at most
``facegrid.data.tf.pack.SHARD_BYTES`` each), the data-service workers of
``--worker-cores`` cores that one trainer needs at 2,000 and 10,000 images/s,
and the traffic each link carries. docs/scaling.md explains the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"
RATES = (2_000, 10_000)
SIZES = (1_000_000, 10_000_000, 100_000_000)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--annotations", type=Path, default=SHARED / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt"
    )
    parser.add_argument("--images", type=Path, default=SHARED / "WIDER_train" / "images")
    parser.add_argument(
        "--packed", type=Path, help="a folder `facegrid data pack` wrote (default: pack to a temp folder)"
    )
    parser.add_argument("--worker-cores", type=int, default=16, help="cores of one data-service worker host")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=300, help="images timed for the CPU figures")
    return parser.parse_args()


def cpu_ms(function, items) -> float:
    start = time.process_time()
    for item in items:
        function(item)
    return (time.process_time() - start) * 1000 / len(items)


def shard_read_rate(packed: Path) -> tuple[float, int]:
    """MB/s and records of one pass over every shard (a first pass warms the page cache)."""
    import tensorflow as tf

    files = sorted(str(p) for p in packed.glob("*.tfrecord-*"))
    for _ in tf.data.TFRecordDataset(files):  # warm-up
        pass
    start, total, records = time.perf_counter(), 0, 0
    for record in tf.data.TFRecordDataset(files).batch(64):
        total += int(tf.reduce_sum(tf.strings.length(record)))
        records += int(record.shape[0])
    return total / 1e6 / (time.perf_counter() - start), records


def main() -> int:
    args = parse_args()
    if not args.annotations.is_file():
        print(f"{args.annotations} not found; pass --annotations and --images", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from facegrid.core.codec import GridCodec
    from facegrid.data.augment import Augment
    from facegrid.data.geometry import load_input
    from facegrid.data.sequence import FaceSequence
    from facegrid.data.tf.pack import SHARD_BYTES, pack_dataset
    from facegrid.wider.annotations import read_annotations

    index = read_annotations(args.annotations)
    files = [args.images / p for p in index.paths.tolist()]
    bytes_per_image = float(np.mean([f.stat().st_size for f in files]))
    timed = files[: args.limit]
    decode_ms = cpu_ms(lambda f: load_input(f, args.input_size), timed)
    sequence = FaceSequence(
        args.annotations,
        args.images,
        batch_size=1,
        input_size=args.input_size,
        codec=GridCodec(args.input_size // 32),
        augment=Augment(),
        seed=0,
    )
    example_ms = cpu_ms(lambda k: sequence[k], range(min(args.limit, len(sequence))))
    packed = args.packed
    if packed is None:
        import tempfile

        packed = Path(tempfile.mkdtemp(prefix="facegrid-packed-")) / "set"
        pack_dataset(index, args.images, packed)
    read_mb_s, records = shard_read_rate(packed)
    x_bytes = args.input_size**2 * 3
    y_bytes = (args.input_size // 32) ** 2 * 5 * 4

    print(f"Measured here (1 thread, {len(timed)} images of {args.annotations.name}):")
    print(f"- stored bytes per image: {bytes_per_image / 1e3:.1f} kB (JPEG as stored; {len(files):,} images)")
    print(f"- decode + resize to {args.input_size}: {decode_ms:.2f} CPU ms per image")
    print(f"- whole augmented example with targets (FaceSequence): {example_ms:.2f} CPU ms per image")
    print(
        f"- packed shard read (tf.data, page cache warm): {read_mb_s:,.0f} MB/s "
        f"= {read_mb_s * 1e6 / bytes_per_image:,.0f} images/s per reader ({records:,} records)"
    )
    print(f"- one example handed to the trainer: {(x_bytes + y_bytes) / 1e3:.1f} kB (uint8 pixels + targets)")
    per_worker = args.worker_cores * 1000 / example_ms
    print(
        f"\nModel: a data-service worker of {args.worker_cores} cores builds {per_worker:,.0f} examples/s "
        f"({args.worker_cores} x 1000 / {example_ms:.2f} ms); shards of at most {SHARD_BYTES / 1e6:.0f} MB."
    )
    print(
        "| images | stored | shards | workers @ 2,000/s | workers @ 10,000/s | reads @ 10,000/s | "
        "to trainer @ 10,000/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in SIZES:
        stored = size * bytes_per_image
        shards = max(1, math.ceil(stored / SHARD_BYTES))
        workers = [math.ceil(rate / per_worker) for rate in RATES]
        reads = RATES[-1] * bytes_per_image
        to_trainer = RATES[-1] * (x_bytes + y_bytes)
        print(
            f"| {size:,} | {stored / 1e12:.2f} TB | {shards:,} | {workers[0]} | {workers[1]} | "
            f"{reads / 1e6:,.0f} MB/s ({reads * 8 / 1e9:.1f} Gbit/s) | "
            f"{to_trainer / 1e6:,.0f} MB/s ({to_trainer * 8 / 1e9:.1f} Gbit/s) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
