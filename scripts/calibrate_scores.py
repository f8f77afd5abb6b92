"""Fit a model's score calibration on held-out WIDER FACE train images, and show how it reads.

    python scripts/calibrate_scores.py --model src/facegrid/models/facegrid-wider.keras \\
        --wider ../shared/data/widerface

The hold-out is the one ``scripts/train_bundled.py`` draws (``--holdout``
images of the train sample with ``--seed``), images that picked the model's
epoch but never trained it. The model detects there with raw scores down to
0.01; the fitted ``score_calibration`` (put it in the model's settings file)
makes a reported score the share of detections at that score that find a
face. The table compares the two per bin of raw score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facegrid.core.scores import RAW_SCORES
from facegrid.eval.calibration import fit_calibration, labelled_scores, reliability
from facegrid.eval.validate import detect_at_floor
from facegrid.infer.detector import Detector
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import holdout_split

EDGES = (0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the model (its settings file beside it)")
    parser.add_argument(
        "--wider", type=Path, required=True, help="the WIDER FACE folder (wider_face_split/, WIDER_train/)"
    )
    parser.add_argument("--holdout", type=int, default=102, help="train images held back from training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    index = read_annotations(args.wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt")
    _, held = holdout_split(index, args.holdout, args.seed)
    detector = Detector.load(args.model)
    detector.calibration = RAW_SCORES  # to fit on
    images = args.wider / "WIDER_train" / "images"
    detections = detect_at_floor(detector, [images / path for path in held.paths])
    scores, found = labelled_scores(detections, held)
    calibration = fit_calibration(scores, found)
    print(f"{len(scores)} detections on {len(held)} held-out images, {int(found.sum())} of them finding a face")
    print(f"score_calibration = [{calibration.slope:.4f}, {calibration.offset:.4f}]")
    print("| raw score | detections | mean confidence | share that found a face |")
    print("|---|---|---|---|")
    for row in reliability(scores, found, calibration, EDGES):
        print(f"| {row.low:.2f}-{row.high:.2f} | {row.count} | {row.confidence:.3f} | {row.found:.3f} |")
    for raw in (0.35, 0.5, 0.7):
        print(f"raw {raw} reads as {float(calibration([raw])[0]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
