"""Every export format side by side: file size, WIDER FACE AP and latency, next to YuNet-n @ 320.

    python benchmarks/export.py [--model PATH] [--sizes 416,320] [--threads 1,0]
        [--calibrate DIR] [--calibration-images 200] [--exports DIR] [--limit N]

The model (default: the bundled one) is exported once per format and
detection size (``keras`` and ``saved_model`` run on TensorFlow; ``litert``
and ``litert-int8`` on LiteRT, ``onnx`` on ONNX Runtime), int8 calibrated on
WIDER train images. Each row then detects on the 394 val images through
:class:`facegrid.infer.detector.Detector`, from JPEG file to boxes, all rows image by
image in turn so that latencies are measured interleaved. AP is the official
protocol at original scale (facegrid.eval.protocol). Latency is measured once per
thread count (``0``: every core), each in a fresh process, because
TensorFlow fixes its thread pools when it starts. YuNet-n @ 320
(``../shared/anchors/``: a yardstick, never shipped) runs in the same passes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_WIDER = SHARED / "data" / "widerface"
DEFAULT_YUNET = SHARED / "anchors" / "yunet_n_320_320.onnx"
FORMATS = ("keras", "saved_model", "litert", "onnx", "litert-int8")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras detector with its settings (default: the bundled model)")
    parser.add_argument("--sizes", default="416,320", help="detection sizes to export and run at")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--threads", default="1,0", help="thread counts, one latency pass each (0: all cores)")
    parser.add_argument("--wider", default=os.environ.get("FACEGRID_WIDER", DEFAULT_WIDER), type=Path)
    parser.add_argument("--yunet", default=DEFAULT_YUNET, type=Path)
    parser.add_argument("--calibrate", type=Path, help="int8 calibration images (default: WIDER train)")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--exports", type=Path, help="keep the exports here (default: a temporary folder)")
    parser.add_argument("--limit", type=int, help="only the first N val images (a quick look)")
    parser.add_argument("--pass", dest="one_pass", type=int, help=argparse.SUPPRESS)  # internal: one thread count
    return parser.parse_args()


def export_all(args, model, sizes, formats, folder: Path) -> list[dict]:
    from facegrid.deploy.export import export_model
    from facegrid.infer.inputs import find_images

    calibration = [path for path, _ in find_images([args.calibrate or args.wider / "WIDER_train" / "images"])]
    rows = []
    for size in sizes:
        for format in formats:
            suffix = {"keras": ".keras", "saved_model": "", "onnx": ".onnx"}.get(format, ".tflite")
            out = folder / f"{format}-{size}{suffix}"
            if not out.exists():
                start = time.perf_counter()
                export_model(
                    model,
                    out,
                    format,
                    detect_size=size,
                    calibration=calibration,
                    calibration_images=args.calibration_images,
                )
                print(f"exported {out.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
            rows.append(
                {
                    "name": f"{format} @ {size}",
                    "path": str(out),
                    "format": format,
                    "size": size,
                    "mb": sum(p.stat().st_size for p in files) / 1e6,
                }
            )
    return rows


def one_pass(args, rows) -> dict:
    """Detect with every row (and YuNet) at ``args.one_pass`` threads; AP and latencies of each."""
    threads = args.one_pass or os.cpu_count()
    import cv2
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    cv2.setNumThreads(threads)
    from wider_eval import YuNet

    from facegrid.eval.protocol import evaluate_wider
    from facegrid.infer.detector import Detector
    from facegrid.wider.annotations import read_annotations
    from facegrid.wider.ground_truth import load_wider_ground_truth
    from facegrid.wider.layout import val_ground_truth, val_images
    from facegrid.wider.results import SCORE_FLOOR

    split = args.wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    keys = read_annotations(split).paths.tolist()[: args.limit]
    images = [val_images(args.wider) / key for key in keys]
    ground_truth = load_wider_ground_truth(val_ground_truth(args.wider))

    runners = []
    for row in rows:
        detector = Detector.load(row["path"], threads=threads).floored(SCORE_FLOOR)  # every box a submission keeps

        def run(path, detector=detector):
            (found,) = detector.detect([path])
            return found.boxes, found.scores

        runners.append((row["name"], run))
    if args.yunet.is_file():
        runners.append(("YuNet-n @ 320", YuNet(args.yunet, 320)))
    for _, run in runners:  # warm-up: graphs built, interpreters planned
        run(images[0])
    results = {name: {} for name, _ in runners}
    latencies = {name: [] for name, _ in runners}
    for key, path in zip(keys, images):
        for name, run in runners:  # interleaved: every row on this image, then the next image
            start = time.perf_counter()
            boxes, scores = run(path)
            latencies[name].append(time.perf_counter() - start)
            results[name][key] = (boxes, scores)
    report = {}
    for name, _ in runners:
        ap = evaluate_wider(results[name], ground_truth).ap
        ms = np.array(latencies[name]) * 1000
        report[name] = {"ap": ap, "median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}
    return {"threads": threads, "images": len(images), "rows": report}


def main() -> int:
    args = parse_args()
    if not (args.wider / "wider_face_split").is_dir():
        print(f"WIDER FACE data not found at {args.wider}; set FACEGRID_WIDER or --wider", file=sys.stderr)
        return 2
    folder = args.exports or Path(tempfile.mkdtemp(prefix="facegrid-exports-"))
    if args.one_pass is not None:
        rows = json.loads((folder / "rows.json").read_text())
        print(json.dumps(one_pass(args, rows)))
        return 0

    from facegrid.core.resources import bundled_model_path

    folder.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = export_all(args, args.model or bundled_model_path(), sizes, args.formats.split(","), folder)
    (folder / "rows.json").write_text(json.dumps(rows))
    passes = []
    for threads in [int(t) for t in args.threads.split(",")]:
        command = [
            sys.executable,
            __file__,
            "--pass",
            str(threads),
            "--exports",
            str(folder),
            "--wider",
            str(args.wider),
            "--yunet",
            str(args.yunet),
        ]
        if args.limit:
            command += ["--limit", str(args.limit)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        passes.append(json.loads(done.stdout.strip().splitlines()[-1]))

    first = passes[0]
    sizes_mb = {row["name"]: row["mb"] for row in rows}
    if args.yunet.is_file():
        sizes_mb["YuNet-n @ 320"] = args.yunet.stat().st_size / 1e6
    print(
        f"WIDER FACE val, {first['images']} images, official protocol, original image scale; latency from "
        "JPEG file to boxes, every row interleaved image by image, medians of all images"
    )
    head = " | ".join(f"{p['threads']} thr median ms | {p['threads']} thr p90 ms" for p in passes)
    print(f"| detector | file MB | easy | medium | hard | {head} | 1st pass time / YuNet-n |")
    print("|---|---|---|---|---|" + "---|---|" * len(passes) + "---|")
    yunet = first["rows"].get("YuNet-n @ 320", {}).get("median")
    for name, result in first["rows"].items():
        ap = result["ap"]
        times = " | ".join(f"{p['rows'][name]['median']:.1f} | {p['rows'][name]['p90']:.1f}" for p in passes)
        mb = f"{sizes_mb[name]:.2f}"
        ratio = f"{result['median'] / yunet:.2f}x" if yunet else "-"
        print(f"| {name} | {mb} | {ap['easy']:.3f} | {ap['medium']:.3f} | {ap['hard']:.3f} | {times} | {ratio} |")
    for other in passes[1:]:
        moved = max(abs(other["rows"][n]["ap"][k] - r["ap"][k]) for n, r in first["rows"].items() for k in r["ap"])
        print(f"AP differs between the {first['threads']}- and {other['threads']}-thread passes by at most {moved:.4f}")
    print(f"exports in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
