"""WIDER FACE AP (easy/medium/hard) of a facegrid model next to OpenCV's Haar cascade.

Both detectors run on the same validation images at their original scale and
are scored by the same code (facegrid.evaluate, the official protocol on the
images present). Also prints facegrid's per-image detection latency.

    python benchmarks/wider_eval.py [--model PATH] [--threads N] [--no-haar]

Needs the shared WIDER FACE data (../shared/data/widerface or $FACEGRID_WIDER)
and OpenCV's Haar cascade (opencv-python-headless, a facegrid dependency, kept < 5:
OpenCV 5 has no CascadeClassifier).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_WIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras detector (default: the bundled model)")
    parser.add_argument("--wider", default=os.environ.get("FACEGRID_WIDER", DEFAULT_WIDER), type=Path)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: all cores)")
    parser.add_argument("--input-size", type=int, help="detection input size (default: the model's)")
    parser.add_argument("--no-haar", action="store_true", help="skip the Haar cascade")
    parser.add_argument("--out", type=Path, help="keep the submissions here (default: a temporary folder)")
    return parser.parse_args()


def haar_detections(images: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """haarcascade_frontalface_default, scaleFactor 1.1, minNeighbors 3, level weights as scores."""
    import cv2

    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    found = {}
    for path in images:
        gray = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
        rects, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=3, outputRejectLevels=True)
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        found[path] = (boxes, np.asarray(weights, np.float32).reshape(-1))
    return found


def main() -> int:
    args = parse_args()
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from facegrid.detect import Detector
    from facegrid.evaluate import evaluate_wider, load_wider_ground_truth
    from facegrid.submission import read_submission, write_image_result
    from facegrid.wider import read_annotations

    split = args.wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    root = args.wider / "WIDER_val" / "images"
    if not split.is_file():
        print(f"WIDER FACE data not found at {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2
    keys = read_annotations(split).paths.tolist()
    images = [root / key for key in keys]
    ground_truth = load_wider_ground_truth(args.wider / "eval_tools" / "ground_truth")
    out = args.out or Path(tempfile.mkdtemp(prefix="facegrid-eval-"))

    detector = Detector.load(args.model, input_size=args.input_size, score_threshold=0.01)
    detector.detect(images[:2])  # warm-up: builds the graph
    latencies = []
    for key, path in zip(keys, images):
        start = time.perf_counter()
        (found,) = detector.detect([path])
        latencies.append(time.perf_counter() - start)
        write_image_result(out / "facegrid", key, found.boxes, found.scores)
    rows = [("facegrid", evaluate_wider(read_submission(out / "facegrid"), ground_truth).ap)]

    if not args.no_haar:
        haar = haar_detections(images)
        for key, path in zip(keys, images):
            write_image_result(out / "haar", key, *haar[path])
        rows.append(("haar", evaluate_wider(read_submission(out / "haar"), ground_truth).ap))

    threads = args.threads or os.cpu_count()
    print(f"WIDER FACE val, {len(images)} images present, official protocol, original image scale")
    print(f"{'detector':<10} {'easy':>7} {'medium':>7} {'hard':>7}")
    for name, ap in rows:
        print(f"{name:<10} {ap['easy']:7.3f} {ap['medium']:7.3f} {ap['hard']:7.3f}")
    ms = np.array(latencies) * 1000
    print(
        f"facegrid latency per image at input {detector.input_size}, {threads} thread(s): "
        f"median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms (decode + resize + model + NMS)"
    )
    print(f"submissions in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
