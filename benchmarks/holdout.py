"""Score detectors on the training recipe's hold-out, by face size: the table a change of recipe is judged by.

    python benchmarks/holdout.py --wider ../shared/data/widerface \\
        --model src/facegrid/models/facegrid-wider.tflite --model runs/v3/best.keras \\
        [--nms-iou 0.3 0.4 0.5] [--size 416]

The hold-out is the one ``scripts/train_bundled.py`` draws (``--holdout``
images of the train sample, ``--seed``): images that picked the epoch and the
thresholds but never trained a model of that recipe, so a lever can be
measured without touching the validation images the model card reports.
The official easy/medium/hard split exists for the validation images only;
here AP at IoU 0.5 is taken over faces whose shorter side reaches 6, 16 and
64 pixels (smaller faces are ignored: a detection on one counts neither way,
as in the official protocol). Every row detects down to raw score 0.01, one
image at a time, with the model's own settings except what the row changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from facegrid.eval.ap import average_precision
from facegrid.eval.validate import detect_at_floor
from facegrid.infer.detector import Detector
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import FaceFilter, holdout_split

MIN_SIZES = (6, 16, 64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wider", type=Path, required=True, help="the WIDER FACE folder")
    parser.add_argument("--model", type=Path, action="append", required=True, help="a model (repeat for more)")
    parser.add_argument("--nms-iou", type=float, nargs="+", help="NMS IoUs to try [default: each model's own]")
    parser.add_argument("--size", type=int, nargs="+", help="longer sides to detect at [default: each model's own]")
    parser.add_argument("--holdout", type=int, default=102)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    index = read_annotations(args.wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    _, held = holdout_split(index, args.holdout, args.seed)
    images = [args.wider / "WIDER_train" / "images" / path for path in held.paths]
    filters = [FaceFilter(min_size=size) for size in MIN_SIZES]
    counted = [int(f.mask(held).sum()) for f in filters]
    print(
        f"{len(held)} hold-out images; faces counted: "
        + ", ".join(f"{n} of {s}+ px" for n, s in zip(counted, MIN_SIZES))
    )
    print("| model | size | NMS IoU | " + " | ".join(f"AP {s}+ px" for s in MIN_SIZES) + " | median ms |")
    print("|---|---|---|" + "---|" * (len(MIN_SIZES) + 1))
    for model in args.model:
        for size in args.size or [None]:
            for nms_iou in args.nms_iou or [None]:
                detector = Detector.load(model, input_size=size, nms_iou=nms_iou, threads=args.threads)
                times = []
                found = []
                for image in images:
                    start = time.perf_counter()
                    found.extend(detect_at_floor(detector, [image]))
                    times.append(time.perf_counter() - start)
                predictions = {path: (d.boxes, d.scores) for path, d in zip(held.paths, found)}
                aps = [average_precision(predictions, held, face_filter=f).ap for f in filters]
                print(
                    f"| {model} | {detector.input_size} | {detector.nms_iou:g} | "
                    + " | ".join(f"{ap:.4f}" for ap in aps)
                    + f" | {1000 * statistics.median(times):.1f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
