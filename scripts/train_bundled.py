"""Train the bundled detector's recipe: the WIDER FACE train sample, less a seeded hold-out that picks the epoch.

    python scripts/train_bundled.py --wider ../shared/data/widerface --run runs/bundled \\
        --backbone runs/facegrid-wider-v1.keras [--resume]

The hold-out (``--holdout`` images of the train sample, drawn with
``--seed``) is written beside the run as two annotation files, so the split
can be read and repeated; it is the same whichever ``--train-file`` lists the
training images (those it holds are left out). The settings are
``src/facegrid/models/facegrid-wider.toml``; ``--backbone`` names the
``.keras`` model (or ``.weights.h5`` file, or ``imagenet-bundled``) whose
backbone starts the training, ``--init`` a facegrid model of these settings
whose every weight does (fine-tuning); ``--epochs`` and ``--learning-rate``
override the schedule's length and peak, ``--alpha`` the backbone's width
(a narrower one from ``imagenet-bundled`` keeps the first channels of each
ImageNet layer).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from facegrid.core.config import load_config
from facegrid.wider.annotations import read_annotations, write_annotations
from facegrid.wider.index import holdout_split

SETTINGS = Path(__file__).resolve().parents[1] / "src" / "facegrid" / "models" / "facegrid-wider.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wider", type=Path, required=True, help="the WIDER FACE folder (wider_face_split/, WIDER_train/)"
    )
    parser.add_argument("--run", type=Path, required=True, help="the run folder")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--backbone", help="a .keras model or .weights.h5 file to start the backbone from")
    start.add_argument("--init", help="a facegrid model of these settings to fine-tune")
    parser.add_argument(
        "--train-file",
        default="wider_face_train_sample_bbx_gt.txt",
        help="the annotation file in wider_face_split/ that lists the training images",
    )
    parser.add_argument("--holdout", type=int, default=102, help="train images held back to pick the epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="the schedule's length [default: the settings']")
    parser.add_argument("--learning-rate", type=float, help="the peak learning rate [default: the settings']")
    parser.add_argument("--alpha", type=float, help="the backbone's width multiplier [default: the settings']")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from facegrid.train.run import train_detector

    folder = args.wider / "wider_face_split"
    _, held = holdout_split(read_annotations(folder / "wider_face_train_sample_bbx_gt.txt"), args.holdout, args.seed)
    listed = read_annotations(folder / args.train_file)
    rest = listed.take(np.flatnonzero(~np.isin(listed.paths, held.paths)))
    split = args.run.parent / f"{args.run.name}-split"
    split.mkdir(parents=True, exist_ok=True)
    write_annotations(rest, split / "train_bbx_gt.txt")
    write_annotations(held, split / "holdout_bbx_gt.txt")
    logging.info("training on %d images of %s, %d held out", len(rest), args.train_file, len(held))
    config = load_config(
        SETTINGS,
        backbone_weights=args.backbone,
        init=args.init,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        alpha=args.alpha,
    )
    images = args.wider / "WIDER_train" / "images"
    train_detector(
        config,
        split / "train_bbx_gt.txt",
        images,
        args.run,
        val_annotations=split / "holdout_bbx_gt.txt",
        val_images=images,
        resume=args.resume,
        verbose=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
