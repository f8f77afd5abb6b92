"""WIDER FACE AP (easy/medium/hard) and latency: facegrid's detectors next to YuNet-n and OpenCV's Haar cascade.

Every detector runs on the same validation images at their original scale,
image by image in turn (so latencies are measured interleaved, under the same
load), and is scored by the same code (facegrid.eval.protocol: the official
protocol on the images present). Latency is from the JPEG file to boxes in
original pixels: decode, resize, network, decode and NMS.

    python benchmarks/wider_eval.py [--model PATH] [--compare OLD.keras ...] [--threads 1]
        [--yunet ../shared/anchors/yunet_n_320_320.onnx] [--no-haar]

Rows: facegrid (the default model unless --model, at its detection size, or
--input-size), each --compare model, YuNet-n @ 320 (longer side resized to
320 with INTER_AREA, boxes scaled back) and at original size when its ONNX
file is at hand (it is a yardstick: never shipped), and the Haar cascade
(haarcascade_frontalface_default). With --sizes, the rows are --model and
YuNet-n at each longer side given instead, for a comparison size by size.
Needs the shared WIDER FACE data
(../shared/data/widerface or $FACEGRID_WIDER).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_WIDER = SHARED / "data" / "widerface"
DEFAULT_YUNET = SHARED / "anchors" / "yunet_n_320_320.onnx"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras detector or an export (default: what detection runs by default)")
    parser.add_argument("--compare", action="append", default=[], help="another detector to run too")
    parser.add_argument("--wider", default=os.environ.get("FACEGRID_WIDER", DEFAULT_WIDER), type=Path)
    parser.add_argument("--yunet", default=DEFAULT_YUNET, type=Path, help="YuNet-n's ONNX file (skipped if absent)")
    parser.add_argument("--threads", type=int, default=0, help="threads for every detector (0: all cores)")
    parser.add_argument("--input-size", type=int, help="--model's detection size (default: its own)")
    parser.add_argument(
        "--sizes", help="instead: --model and YuNet-n at each of these longer sides, e.g. 320,416,512,640"
    )
    parser.add_argument("--no-haar", action="store_true", help="skip the Haar cascade")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick look)")
    parser.add_argument("--out", type=Path, help="keep the submissions here (default: a temporary folder)")
    return parser.parse_args()


class Haar:
    """haarcascade_frontalface_default, scaleFactor 1.1, minNeighbors 3, level weights as scores."""

    name = "Haar cascade (OpenCV)"

    def __init__(self):
        import cv2

        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def __call__(self, path: Path):
        gray = self.cv2.cvtColor(self.cv2.imread(str(path)), self.cv2.COLOR_BGR2GRAY)
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=3, outputRejectLevels=True
        )
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1), np.asarray(weights).reshape(-1)


class YuNet:
    """OpenCV's FaceDetectorYN on YuNet-n, at the longer side ``size`` (None: the image as it is)."""

    def __init__(self, onnx: Path, size: int | None):
        import cv2

        self.cv2, self.size = cv2, size
        self.name = f"YuNet-n @ {size}" if size else "YuNet-n, original size"
        self.detector = cv2.FaceDetectorYN.create(str(onnx), "", (320, 320), 0.02, 0.45, 5000)

    def __call__(self, path: Path):
        image = self.cv2.imread(str(path))
        height, width = image.shape[:2]
        scale = 1.0
        if self.size:
            scale = self.size / max(width, height)
            image = self.cv2.resize(
                image, (round(width * scale), round(height * scale)), interpolation=self.cv2.INTER_AREA
            )
        self.detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = self.detector.detect(image)
        faces = np.zeros((0, 15), np.float32) if faces is None else faces
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1) / scale
        return boxes.astype(np.float32), faces[:, 14]


class Facegrid:
    """A facegrid detector (Keras or an export), keeping every box a WIDER submission keeps (raw score 0.01 up)."""

    def __init__(self, path: str | None, input_size: int | None, label: str, threads: int | None):
        from facegrid.infer.detector import Detector
        from facegrid.infer.runtimes import is_exported
        from facegrid.wider.results import SCORE_FLOOR

        options = {"threads": threads} if path is None or is_exported(path) else {}  # Keras: TensorFlow's threads
        self.detector = Detector.load(path, input_size=input_size, **options).floored(SCORE_FLOOR)
        layout = "pyramid" if self.detector.codec is not None else "single grid"
        self.name = f"facegrid {label} ({layout}, {self.detector.input_size}, {self.detector.runtime})"

    def __call__(self, path: Path):
        (found,) = self.detector.detect([path])
        return found.boxes, found.scores


def main() -> int:
    args = parse_args()
    split = args.wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    if not split.is_file():
        print(f"WIDER FACE data not found at {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2
    import cv2
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        cv2.setNumThreads(args.threads)
    from facegrid.eval.protocol import evaluate_wider
    from facegrid.wider.annotations import read_annotations
    from facegrid.wider.ground_truth import load_wider_ground_truth
    from facegrid.wider.layout import val_ground_truth, val_images
    from facegrid.wider.results import read_submission, write_image_result

    keys = read_annotations(split).paths.tolist()[: args.limit]
    images = [val_images(args.wider) / key for key in keys]
    ground_truth = load_wider_ground_truth(val_ground_truth(args.wider))
    out = args.out or Path(tempfile.mkdtemp(prefix="facegrid-eval-"))

    threads = args.threads or None
    label = "default" if args.model is None else Path(args.model).name
    if args.sizes:
        if not args.yunet.is_file():
            print(f"--sizes compares with YuNet-n: {args.yunet} not found", file=sys.stderr)
            return 2
        detectors = []
        for size in map(int, args.sizes.split(",")):
            detectors += [Facegrid(args.model, size, label, threads), YuNet(args.yunet, size)]
    else:
        detectors = [Facegrid(args.model, args.input_size, label, threads)]
        detectors += [Facegrid(path, None, Path(path).name, threads) for path in args.compare]
        if args.yunet.is_file():
            detectors += [YuNet(args.yunet, 320), YuNet(args.yunet, None)]
        else:
            print(f"YuNet-n left out: {args.yunet} not found", file=sys.stderr)
        if not args.no_haar:
            detectors.append(Haar())
    for detector in detectors:  # warm-up: graphs built, caches filled
        detector(images[0])

    latencies = {detector.name: [] for detector in detectors}
    for key, path in zip(keys, images):
        for k, detector in enumerate(detectors):  # interleaved: every detector on this image, then the next image
            start = time.perf_counter()
            boxes, scores = detector(path)
            latencies[detector.name].append(time.perf_counter() - start)
            write_image_result(out / f"d{k}", key, boxes, scores)

    threads = args.threads or os.cpu_count()
    print(
        f"WIDER FACE val, {len(images)} images, official protocol, original image scale; "
        f"latency from JPEG file to boxes on {threads} thread(s), interleaved"
    )
    print("| detector | easy | medium | hard | median ms | p90 ms |")
    print("|---|---|---|---|---|---|")
    for k, detector in enumerate(detectors):
        ap = evaluate_wider(read_submission(out / f"d{k}"), ground_truth).ap
        ms = np.array(latencies[detector.name]) * 1000
        print(
            f"| {detector.name} | {ap['easy']:.3f} | {ap['medium']:.3f} | {ap['hard']:.3f} | "
            f"{np.median(ms):.1f} | {np.percentile(ms, 90):.1f} |"
        )
    print(f"submissions in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
