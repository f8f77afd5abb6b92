"""Detection speed of a facegrid model on CPU: images/s and per-image latency, with where the time goes.

Times ``Detector.detect`` over the WIDER FACE validation JPEGs, which is what
``facegrid detect`` does per image: read + decode + resize the JPEG (pre), run
the model (``Detector.predict_grids``), decode the grid + NMS (post). Each
image's time is split into model, pre and post by timing those calls inside
``detect`` itself. It runs TensorFlow with 1 thread and with all cores, at
batch size 1 and batched, and prints one row per (threads, batch).

    python benchmarks/detect.py [--images N] [--batch 8] [--passes 3] [--model PATH] [--input-size N] [--json OUT]

Every configuration is warmed up once (the first predict of each batch shape
builds the graph), then timed over ``--passes`` full passes, batch 1 and
batched interleaved so that noise hits both; figures are medians across
passes. TensorFlow's thread counts can be set only once per process, so each
thread count runs in a child process of this script (``--child-threads N``,
which prints its raw timings as JSON on stdout).

Needs the shared WIDER FACE data (../shared/data/widerface or $FACEGRID_WIDER).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_WIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"

#: Images used to compare ``predict_on_batch`` with a direct ``model(x)`` call at batch 1.
DIRECT_CALL_IMAGES = 32


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras detector (default: the bundled model)")
    parser.add_argument("--wider", default=os.environ.get("FACEGRID_WIDER", DEFAULT_WIDER), type=Path)
    parser.add_argument("--input-size", type=int, help="detection input size (default: the model's)")
    parser.add_argument("--images", type=int, help="time only the first N images (default: all)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the batched rows (default: 8)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per configuration (default: 3)")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("images", "batch", "passes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def find_val_images(wider: Path, limit: int | None) -> list[Path]:
    """The validation JPEGs present, sorted by path, the first ``limit`` of them."""
    return sorted((wider / "WIDER_val" / "images").rglob("*.jpg"))[:limit]


# --- child: one TensorFlow thread count -------------------------------------------------------


class Stopwatch:
    """Wraps a callable and adds the wall time of each call to ``seconds``."""

    def __init__(self, function):
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def lap(self) -> float:
        """Seconds since the last lap, and start a new one."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def timed_pass(detector, model_clock: Stopwatch, post_clock: Stopwatch, images: list[Path], batch: int) -> dict:
    """One ``Detector.detect`` pass over ``images``, one call per batch, timed call by call.

    Returns per-call lists: ``images``, ``wall_s``, ``model_s`` (predict_grids)
    and ``post_s`` (grid decode + NMS); what remains of the wall time is
    reading, decoding and resizing the images. ``cpu_s`` is the CPU time the
    process used over the pass: divided by the wall time, the cores it
    actually got. ``faces`` counts the detections, so passes can be checked to
    agree.
    """
    record = {"images": [], "wall_s": [], "model_s": [], "post_s": [], "faces": 0}
    model_clock.lap()
    post_clock.lap()
    cpu_start = time.process_time()
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        began = time.perf_counter()
        found = detector.detect(chunk, batch_size=batch)
        record["wall_s"].append(time.perf_counter() - began)
        record["images"].append(len(chunk))
        record["model_s"].append(model_clock.lap())
        record["post_s"].append(post_clock.lap())
        record["faces"] += sum(len(detections.scores) for detections in found)
    record["cpu_s"] = time.process_time() - cpu_start
    return record


def direct_call_comparison(detector, images: list[Path]) -> dict:
    """Model-only ms per image at batch 1: ``model.predict_on_batch`` (what Detector uses) vs ``model(x)``.

    Both run on the same preloaded pixels, alternating image by image, after
    one warm-up call each. Returns the per-image times of both.
    """
    from facegrid.data.geometry import load_fitted, load_input

    model = detector.model
    load = load_input if detector.codec is None else load_fitted  # as Detector.detect does
    pixels = [load(path, detector.input_size)[0][None] for path in images]
    calls = {
        "predict_on_batch": model.predict_on_batch,
        "direct": lambda x: model(x, training=False),
    }
    times = {name: [] for name in calls}
    for call in calls.values():  # traced once before timing
        np.asarray(call(pixels[0]))
    for x in pixels:
        for name, call in calls.items():
            began = time.perf_counter()
            np.asarray(call(x))
            times[name].append(time.perf_counter() - began)
    return {f"{name}_s": seconds for name, seconds in times.items()}


def run_child(args, threads: int) -> dict:
    """Everything timed at one thread count, as raw figures (see :func:`main` for the summary)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from facegrid.infer.detector import Detector, bundled_model_path

    images = find_val_images(args.wider, args.images)
    detector = Detector.load(args.model, input_size=args.input_size)
    # Timing predict_grids and decode on the instance makes detect() report its own split.
    model_clock = detector.predict_grids = Stopwatch(detector.predict_grids)
    post_clock = detector.decode = Stopwatch(detector.decode)
    batches = sorted({1, args.batch})

    for path in images:  # timed passes then read from the page cache, as all but the first would anyway
        path.read_bytes()
    for batch in batches:  # a full batch and the last, partial one: every shape the passes run
        detector.detect(images[: batch + len(images) % batch], batch_size=batch)

    passes = {batch: [] for batch in batches}
    for _ in range(args.passes):
        for batch in batches:
            passes[batch].append(timed_pass(detector, model_clock, post_clock, images, batch))

    return {
        "threads": threads,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "model": str(Path(args.model).resolve() if args.model else bundled_model_path()),
        "input_size": detector.input_size,
        "images": len(images),
        "passes": {str(batch): runs for batch, runs in passes.items()},
        "direct_call": direct_call_comparison(detector, images[:DIRECT_CALL_IMAGES]),
    }


# --- parent: one child per thread count, then the table -------------------------------------


def cpu_name() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spawn_child(threads: int) -> dict:
    """Run this script with ``--child-threads``; its last stdout line is its JSON report."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--child-threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {threads}-thread run failed (exit status {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise_pass(record: dict, batch: int) -> dict:
    """Images/s, per-image latency and the model / pre / post split of one pass."""
    count = np.asarray(record["images"])
    wall, model, post = (np.asarray(record[key]) for key in ("wall_s", "model_s", "post_s"))
    per_image_ms = wall / count * 1000
    return {
        "images_per_s": count.sum() / wall.sum(),
        "latency_ms_median": float(np.median(per_image_ms)),
        "latency_ms_p90": float(np.percentile(per_image_ms, 90)),
        "batch_ms_median": float(np.median(wall[count == batch]) * 1000),
        "model_ms_per_image": model.sum() / count.sum() * 1000,
        "pre_ms_per_image": (wall - model - post).sum() / count.sum() * 1000,
        "post_ms_per_image": post.sum() / count.sum() * 1000,
        "cores_used": record["cpu_s"] / wall.sum(),
    }


def summarise(report: dict) -> list[dict]:
    """One row per batch size of a child's report: each figure's median across passes."""
    rows = []
    for batch, records in report["passes"].items():
        per_pass = [summarise_pass(record, int(batch)) for record in records]
        row = {"threads": report["threads"], "batch": int(batch)}
        row.update({key: float(np.median([figures[key] for figures in per_pass])) for key in per_pass[0]})
        row["faces"] = sorted({record["faces"] for record in records})
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        f"{'threads':>7} {'batch':>5} {'images/s':>9} {'ms/img med':>10} {'ms/img p90':>10} "
        f"{'batch ms':>9} {'model ms/img':>12} {'pre+post ms/img':>15} {'cores used':>10}"
    )
    for row in rows:
        print(
            f"{row['threads']:>7} {row['batch']:>5} {row['images_per_s']:>9.1f} {row['latency_ms_median']:>10.1f} "
            f"{row['latency_ms_p90']:>10.1f} {row['batch_ms_median']:>9.1f} {row['model_ms_per_image']:>12.1f} "
            f"{row['pre_ms_per_image'] + row['post_ms_per_image']:>15.1f} {row['cores_used']:>10.2f}"
        )


def main() -> int:
    args = parse_args()
    if args.child_threads is not None:
        print(json.dumps(run_child(args, args.child_threads)))
        return 0

    images = find_val_images(args.wider, args.images)
    if not images:
        print(f"WIDER FACE val images not found under {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    reports = []
    for threads in sorted({1, cores}):
        print(f"timing with {threads} thread(s)...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        reports.append(spawn_child(threads))
        print(f"  done in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    rows = [row for report in reports for row in summarise(report)]

    first = reports[0]
    print(f"machine:    {cores} CPU(s), {cpu_name()}; TensorFlow {first['tensorflow']}, Keras {first['keras']}")
    print(f"model:      {first['model']}, input size {first['input_size']}")
    print(f"images:     {first['images']} WIDER FACE val JPEGs under {args.wider}")
    print(f"timing:     Detector.detect, warm-up then {args.passes} passes, medians across passes")
    print(
        f"load:       1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(other processes on the cores skew the figures)"
    )
    print()
    print_table(rows)
    print()
    print("ms/img: wall time of each detect() call / its images (at batch 1, the per-image latency);")
    print("batch ms: median wall time of a full batch; model: predict_grids (predict_on_batch);")
    print("cores used: CPU time / wall time of the process (below the thread count: threads waited or lacked a core);")
    print("pre+post: JPEG read + decode + resize, then grid decode + NMS, split below (ms/image):")
    for row in rows:
        print(
            f"  threads {row['threads']}, batch {row['batch']}: "
            f"pre {row['pre_ms_per_image']:.1f}, post {row['post_ms_per_image']:.1f}"
        )
    if len({face for row in rows for face in row["faces"]}) > 1:
        print("note: the passes did not all find the same number of faces:", [row["faces"] for row in rows])

    print()
    print("model only at batch 1, preloaded pixels, predict_on_batch vs a direct model(x, training=False) call:")
    for report in reports:
        direct = report["direct_call"]
        pob = np.median(direct["predict_on_batch_s"]) * 1000
        call = np.median(direct["direct_s"]) * 1000
        print(
            f"  threads {report['threads']}: predict_on_batch {pob:.1f} ms, model(x) {call:.1f} ms "
            f"(median of {len(direct['direct_s'])} images; model(x) / predict_on_batch = {call / pob:.2f})"
        )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {"cpus": cores, "cpu": cpu_name(), "platform": platform.platform()},
                    "wider": str(args.wider),
                    "batch": args.batch,
                    "rows": rows,
                    "runs": reports,
                },
                indent=1,
            )
        )
        print(f"raw figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
