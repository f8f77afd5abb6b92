"""Memory over many epochs: resident set size of training with FaceSequence workers and the tf.data pipeline.

Trains a one-layer model for ``--epochs`` epochs on the WIDER FACE val images
present (augmentation on, 2 workers), once per input pipeline, each in a fresh
process, and prints the RSS of the training process (plus its worker
processes, where there are any: their peak during the epoch) after epochs 1,
10 and 20. A leak shows as
growth from epoch to epoch; a hang as a run that never ends (``--timeout``).

    python benchmarks/soak.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_WIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"
MODES = {
    "FaceSequence, 2 threads": ("sequence", False),
    "FaceSequence, 2 processes": ("sequence", True),
    "FacePipeline (tf.data), 2 parallel decodes": ("tfdata", False),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wider", default=os.environ.get("FACEGRID_WIDER", DEFAULT_WIDER), type=Path)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=900, help="seconds before a run counts as hung")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def rss_mb(pid: int) -> float:
    """Resident set size of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_rss_mb(pid: int) -> float:
    """Summed RSS of a process's live child processes (worker processes), found by their parent id."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("PPid", "0").strip()) == pid:
            total += int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    return total


def run_child(mode: str, wider: Path, epochs: int) -> dict:
    import keras

    from facegrid.data.sequence import FaceSequence
    from facegrid.data.tf.pipeline import FacePipeline

    pipeline, processes = MODES[mode]
    annotations = wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    images = wider / "WIDER_val" / "images"
    common = dict(batch_size=16, augment=True, seed=0)
    if pipeline == "sequence":
        data = FaceSequence(annotations, images, workers=2, use_multiprocessing=processes, **common)
        fit_args = {}
    else:
        source = FacePipeline(annotations, images, parallel_calls=2, **common)
        data, fit_args = source.dataset(epochs=epochs), {"steps_per_epoch": len(source)}
    model = keras.Sequential(
        [
            keras.Input((224, 224, 3), dtype="uint8"),
            keras.layers.Rescaling(1 / 127.5, -1.0),
            keras.layers.Conv2D(5, 32, strides=32),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    figures, peak, running = {}, [0.0], [True]

    def sample_workers():  # worker processes may be gone by the epoch's end: sample them during it
        while running[0]:
            peak[0] = max(peak[0], children_rss_mb(os.getpid()))
            time.sleep(0.2)

    class Measure(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            figures[epoch + 1] = {"rss_mb": rss_mb(os.getpid()), "workers_rss_mb": peak[0]}
            peak[0] = 0.0

    sampler = threading.Thread(target=sample_workers, daemon=True)
    sampler.start()
    model.fit(data, epochs=epochs, callbacks=[Measure()], shuffle=False, verbose=0, **fit_args)
    running[0] = False
    return figures


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.wider, args.epochs)))
        return 0
    if not (args.wider / "WIDER_val" / "images").is_dir():
        print(f"WIDER FACE data not found at {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2
    marks = sorted({1, min(10, args.epochs), args.epochs})
    print(
        f"RSS (MB) of the training process + its worker processes, {args.epochs} epochs of 394 val images, "
        "augmented, batch 16"
    )
    print(f"{'pipeline':44s} " + " ".join(f"{'epoch ' + str(m):>18s}" for m in marks) + f" {'growth 1->last':>15s}")
    for mode in MODES:
        command = [sys.executable, __file__, "--child", mode, "--wider", str(args.wider), "--epochs", str(args.epochs)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{mode:44s} HUNG: no end after {args.timeout} s")
            continue
        if done.returncode:
            print(f"{mode:44s} FAILED:\n{done.stderr[-2000:]}")
            continue
        figures = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
        cells = [f"{figures[m]['rss_mb']:7.0f} + {figures[m]['workers_rss_mb']:6.0f}" for m in marks]
        total = {m: figures[m]["rss_mb"] + figures[m]["workers_rss_mb"] for m in marks}
        print(f"{mode:44s} " + " ".join(f"{c:>18s}" for c in cells) + f" {total[marks[-1]] - total[marks[0]]:+15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
