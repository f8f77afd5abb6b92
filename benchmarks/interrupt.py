"""Kill training with SIGKILL at random moments, resume each time, and compare with a run never stopped.

Both runs train the same small detector with the same seed through
``facegrid train`` (the tf.data pipeline, augmentation on). The interrupted run
is killed ``--kills`` times, each time at a random moment of the epoch after
the one it has just finished (mid-batch or mid-checkpoint), and continued with
``--resume`` until it finishes. Both validate on the sample photos every epoch
with early stopping on (``--patience``), so a resumed run must also carry on
early stopping's count. Its final weights, and the epoch it stopped after,
should equal the uninterrupted run's up to floating-point noise.

    python benchmarks/interrupt.py [--kills 3] [--epochs 6] [--patience 2] [--seed 0]

Uses the bundled sample images (listed many times over), so it needs no data.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = """\
input_size = 64
grid_size = 4
alpha = 0.35
backbone_weights = "none"
backbone_style = "keras"
head_channels = 8
batch_size = 4
epochs = {epochs}
workers = 2
warmup_epochs = 1
early_stopping_patience = {patience}
seed = {seed}
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=2, help="early stopping patience (0: off)")
    parser.add_argument("--repeat", type=int, default=60, help="times each sample image is listed")
    return parser.parse_args(argv)


def dataset(folder: Path, repeat: int) -> tuple[Path, Path, Path]:
    """The samples' annotation file with each image listed ``repeat`` times: the file, and the images folder."""
    from importlib import resources

    samples = Path(str(resources.files("facegrid") / "samples"))
    text = (samples / "faces_bbx_gt.txt").read_text()
    annotations = folder / "faces.txt"
    annotations.write_text(text * repeat)
    return annotations, samples / "faces_bbx_gt.txt", samples / "images"


def command(config: Path, annotations: Path, validation: Path, images: Path, run: Path, resume: bool) -> list[str]:
    cli = [
        str(Path(sys.executable).with_name("facegrid")),
        "train",
        "--annotations",
        str(annotations),
        "--images",
        str(images),
        "--val-annotations",
        str(validation),
        "--val-images",
        str(images),
        "--run",
        str(run),
        "--config",
        str(config),
    ]
    return cli + (["--resume"] if resume else [])


def finished_epochs(run: Path) -> int:
    try:
        return json.loads((run / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def weights(path: Path) -> list[np.ndarray]:
    from facegrid.model.network import load_detector

    return [np.asarray(w) for w in load_detector(path).weights]


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        annotations, validation, images = dataset(tmp, args.repeat)
        config = tmp / "settings.toml"
        config.write_text(SETTINGS.format(epochs=args.epochs, seed=args.seed, patience=args.patience))

        whole = tmp / "whole"
        process = subprocess.Popen(
            command(config, annotations, validation, images, whole, False),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        saved = []  # when each epoch's checkpoint appeared
        while process.poll() is None:
            if finished_epochs(whole) > len(saved):
                saved.append(time.perf_counter())
            time.sleep(0.02)
        if process.returncode:
            raise SystemExit(f"the uninterrupted run failed (exit status {process.returncode})")
        epoch_s = float(np.median(np.diff(saved)))
        print(
            f"uninterrupted run: {finished_epochs(whole)} of {args.epochs} epochs (early stopping, patience "
            f"{args.patience}), {epoch_s:.1f} s each"
        )

        run = tmp / "killed"
        for kill in range(args.kills):
            done = finished_epochs(run)
            process = subprocess.Popen(
                command(config, annotations, validation, images, run, done > 0),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while finished_epochs(run) == done and process.poll() is None:
                time.sleep(0.05)  # until this process has finished an epoch of its own
            delay = rng.uniform(0.0, 1.0) * epoch_s
            time.sleep(delay)
            if process.poll() is not None:
                print(f"kill {kill + 1}: the run had already finished")
                break
            process.send_signal(signal.SIGKILL)
            process.wait()
            print(
                f"kill {kill + 1}: SIGKILL {delay:.1f} s after epoch {done + 1} was saved; "
                f"{finished_epochs(run)} epoch(s) complete on disk; temporary files left: "
                f"{sorted(p.name for p in run.iterdir() if 'tmp' in p.name) or 'none'}"
            )
        subprocess.run(
            command(config, annotations, validation, images, run, finished_epochs(run) > 0),
            check=True,
            capture_output=True,
        )
        print(f"resumed to the end: {finished_epochs(run)} epochs")

        a, b = weights(tmp / "whole" / "last.keras"), weights(run / "last.keras")
        difference = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
        scale = max(float(np.abs(x).max()) for x in a)
        print(
            f"final weights, interrupted vs uninterrupted: max |difference| {difference:.3g} "
            f"(largest weight {scale:.3g}; {len(a)} tensors)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
