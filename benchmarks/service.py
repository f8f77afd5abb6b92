"""Input throughput through ``model.fit`` locally and through a loopback tf.data service with one and two workers.

    python benchmarks/service.py [--passes 3] [--limit N]

On the WIDER FACE train images at hand (../shared/data/widerface or
$FACEGRID_WIDER), the same one-layer model as benchmarks/pipeline.py (so the
figures are about the input), batch 16, 224 x 224, 7 x 7 grid targets,
augmentation on. Variants, each in a fresh child process, interleaved pass
by pass; the table shows medians of images/s over epochs 2-4 of each fit:

  FaceSequence      keras.utils.PyDataset, 2 worker threads
  FacePipeline      tf.data, examples planned in NumPy (tf.numpy_function)
  PureTFPipeline    tf.data, TensorFlow ops only, over the image folder
  PackedPipeline    the same, over the images packed into 8 TFRecord shards (`facegrid data pack`)
  service, 1 worker PackedPipeline run by `facegrid data serve --worker` (its own process),
  service, 2 workers  read by the trainer through tf.data service (dynamic sharding)

The servers are `facegrid data serve` processes on loopback, started once; the
packed set is written once, into a temporary folder, before the first pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline import BATCH, FIT_EPOCHS, EpochTimer, machine, one_layer_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"
VARIANTS = {
    "sequence": "FaceSequence (2 threads)",
    "pipeline": "FacePipeline (numpy_function plan)",
    "puretf": "PureTFPipeline (TF ops only), image folder",
    "packed": "PackedPipeline (TF ops only), 8 shards",
    "service1": "PackedPipeline via service, 1 worker",
    "service2": "PackedPipeline via service, 2 workers",
}
SHARDS = 8


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--wider", type=Path, default=Path(os.environ.get("FACEGRID_WIDER", SHARED)))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--service", help=argparse.SUPPRESS)
    parser.add_argument("--packed", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def train_index(args):
    from facegrid.wider.annotations import read_annotations

    index = read_annotations(args.wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    return index.take(list(range(min(args.limit, len(index))))) if args.limit else index


def run_child(variant: str, args) -> float:
    from facegrid.core.codec import GridCodec

    images = args.wider / "WIDER_train" / "images"
    index = train_index(args)
    settings = dict(batch_size=BATCH, input_size=224, codec=GridCodec(7), augment=True, seed=0)
    if variant == "sequence":
        from facegrid.data.sequence import FaceSequence

        data, steps = FaceSequence(index, images, workers=2, **settings), None
    elif variant == "pipeline":
        from facegrid.data.tf.pipeline import FacePipeline

        pipeline = FacePipeline(index, images, **settings)
        data, steps = pipeline.dataset(epochs=FIT_EPOCHS), len(pipeline)
    elif variant == "puretf":
        from facegrid.data.tf.puretf import PureTFPipeline

        pipeline = PureTFPipeline(index, images, **settings)
        data, steps = pipeline.dataset(epochs=FIT_EPOCHS), len(pipeline)
    else:
        from facegrid.data.tf.puretf import PackedPipeline

        pipeline = PackedPipeline(args.packed, **settings)
        data, steps = pipeline.dataset(epochs=FIT_EPOCHS), len(pipeline)
        if variant != "packed":
            from facegrid.scale.service import distribute

            data = distribute(data, args.service)
    timer = EpochTimer()
    model = one_layer_model("uint8", "pool")
    model.fit(data, epochs=FIT_EPOCHS, steps_per_epoch=steps, callbacks=[timer.callback], shuffle=False, verbose=0)
    return len(index) / statistics.median(timer.times[1:])  # the first epoch includes tracing and start-up


def start_service(workers: int) -> tuple[str, list[subprocess.Popen]]:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "facegrid.cli", "data", "serve"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    servers = [subprocess.Popen(command + ["--dispatcher", str(port)], env=env, stderr=subprocess.PIPE, text=True)]
    servers[0].stderr.readline()
    for _ in range(workers):
        servers.append(
            subprocess.Popen(command + ["--worker", f"localhost:{port}"], env=env, stderr=subprocess.PIPE, text=True)
        )
        servers[-1].stderr.readline()
    return f"localhost:{port}", servers


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args)))
        return 0
    if not (args.wider / "WIDER_train" / "images").is_dir():
        print(f"WIDER FACE data not found at {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2
    from facegrid.data.tf.pack import pack_dataset

    packed = Path(tempfile.mkdtemp(prefix="facegrid-bench-packed-"))
    pack_dataset(train_index(args), args.wider / "WIDER_train" / "images", packed, shards=SHARDS, overwrite=True)
    services = {"service1": start_service(1), "service2": start_service(2)}
    rates = {variant: [] for variant in VARIANTS}
    try:
        for p in range(args.passes):
            order = list(VARIANTS) if p % 2 == 0 else list(VARIANTS)[::-1]
            for variant in order:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    variant,
                    "--wider",
                    str(args.wider),
                    "--packed",
                    str(packed),
                ]
                if variant in services:
                    command += ["--service", services[variant][0]]
                if args.limit:
                    command += ["--limit", str(args.limit)]
                done = subprocess.run(
                    command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
                )
                if done.returncode:
                    raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
                rates[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"pass {p + 1}: {variant} {rates[variant][-1]:.0f} images/s", file=sys.stderr, flush=True)
    finally:
        for _, servers in services.values():
            for server in servers:
                server.terminate()
        shutil.rmtree(packed, ignore_errors=True)
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    print(
        f"machine: {machine()}; images/s through model.fit of a one-layer model, median of {args.passes} "
        f"interleaved passes (each the median of epochs 2-{FIT_EPOCHS}), batch {BATCH}, 224 x 224, augmented"
    )
    print("| input | images/s | vs PureTFPipeline locally |")
    print("|---|---|---|")
    for variant, label in VARIANTS.items():
        print(f"| {label} | {medians[variant]:.0f} | {medians[variant] / medians['puretf']:.2f}x |")
    overhead = 1 - medians["service1"] / medians["packed"]
    print(f"service overhead against the same pipeline run locally (1 worker): {overhead:.0%}")
    return 0 if all(math.isfinite(v) for v in medians.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
