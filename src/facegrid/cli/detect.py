"""``facegrid detect``, ``val`` and ``evaluate``: faces found in images and videos, and scored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facegrid.cli.app import (
    Number,
    Progress,
    fatal_input_errors,
    load_detector,
    main,
    printable,
    quiet_stderr,
)
from facegrid.core.config import POLICIES, Config, check_input_side
from facegrid.core.errors import PathError
from facegrid.wider.annotations import read_annotations
from facegrid.wider.layout import GROUND_TRUTH_FOLDER, images_folder

SIZE_HELP = (
    "The longer side images are detected at, a multiple of 32: larger finds smaller faces, "
    "at a cost in time [default: the model's detect_size setting]."
)


def _detection_size(context, parameter, size: int | None) -> int | None:
    """Refuse, before any model loads, a detection size the network cannot take."""
    if size is not None:
        try:
            check_input_side("--size", size)
        except ValueError as error:
            raise click.BadParameter(str(error).removeprefix("--size "), context, parameter) from None
    return size


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="A .keras detector, or an export of one (.tflite, .onnx: no TensorFlow needed; a SavedModel "
    "folder), its settings beside it [default: the bundled model, int8 LiteRT where LiteRT is installed].",
)
@click.option("--size", type=int, callback=_detection_size, help=SIZE_HELP)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Write annotated images (and videos) here."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image (per video frame) on stdout.")
@click.option(
    "--threshold",
    type=Number(0, 1),
    help="Minimum score of a reported face [default: the model's score_threshold setting, "
    f"else {Config.score_threshold}].",
)
@click.option("--nms-iou", type=Number(0, 1), help=f"[default: the model's nms_iou setting, else {Config.nms_iou}]")
@click.option(
    "--wider-submission",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the official WIDER FACE result files (every box down to raw score 0.01, before the "
    "model's score calibration) as DIR/<event>/<name>.txt, for images at INPUT/<event>/<name> (INPUT a folder).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Images (frames) run through a Keras model at once (LiteRT runs one at a time).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="CPU threads of a .tflite or .onnx model's runtime [default: all cores].",
)
@click.option(
    "--on-bad-image",
    type=click.Choice(POLICIES),
    default=Config.on_bad_image,
    show_default=True,
    help="An unreadable image or video stops the run (exit status 2), or is reported and skipped "
    "(the others are still processed; exit status 1).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace annotated copies and result files that exist (never an input)."
)
@fatal_input_errors
def detect(
    inputs,
    model_path,
    size,
    out,
    as_json,
    threshold,
    nms_iou,
    wider_submission,
    batch_size,
    threads,
    on_bad_image,
    overwrite,
) -> None:
    """Find faces in INPUT images and videos (files, or folders searched recursively).

    Annotated copies keep their path under the folder they were found in
    (JPEG, so ``.jpg`` is added to other names; a video becomes MPEG-4 at its
    own frame rate and size, ``.mp4`` added to other names; a clash gets
    ``-2``). With --json, a video gives one line per frame, with its number
    and time. Inputs without any image, a video OpenCV cannot open, and with
    --wider-submission a video or an image that is not INPUT/<event>/<name>
    or shares its result file with another, stop the command before the
    model loads (exit status 2), as does an output that exists (unless
    --overwrite) or that is one of the inputs (always). A progress bar shows
    on a terminal (or with -v), and a summary line ends the run, both on stderr.
    """
    from facegrid.infer.run import (
        FrameDone,
        ImageDone,
        VideoDone,
        plan_detection,
        run_detection,
    )

    with quiet_stderr():  # FFmpeg's own lines about a video it cannot read
        plan = plan_detection(
            inputs,
            out=out,
            wider_submission=wider_submission,
            model=model_path,
            overwrite=overwrite,
            on_bad_image=on_bad_image,
        )
    for error in plan.skipped:
        click.echo(f"skipped {printable(str(error))}", err=True)
    detector = load_detector(model_path, input_size=size, score_threshold=threshold, nms_iou=nms_iou, threads=threads)
    progress = Progress(plan.frames, plan.kind)
    unreadable = []

    def skipped(error) -> None:
        progress.echo(f"skipped {printable(str(error))}", err=True)
        unreadable.append(error)

    for done in run_detection(
        detector, plan, batch_size=batch_size, on_unreadable=skipped if on_bad_image == "skip" else None
    ):
        if isinstance(done, ImageDone):
            progress.count(len(done.found.scores))
            progress.echo(
                json.dumps(done.found.to_dict())
                if as_json
                else f"{done.found.path}: {len(done.found.scores)} face(s)" + _written(done.target)
            )
        elif isinstance(done, FrameDone):
            progress.count(len(done.frame.found.scores), frame=True)
            if as_json:
                progress.echo(json.dumps(done.frame.to_dict()))
        elif isinstance(done, VideoDone):
            progress.videos += 1
            if not as_json:
                progress.echo(f"{done.path}: {done.frames} frame(s), {done.faces} face(s)" + _written(done.target))
    progress.close()
    sys.exit(1 if plan.skipped or unreadable else 0)


def _written(target: Path | None) -> str:
    return "" if target is None else f" -> {target}"


@main.command()
@click.argument("submission", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--ground-truth",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help=f"The official {GROUND_TRUTH_FOLDER} folder: WIDER easy/medium/hard AP.",
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Any WIDER-format annotation file: plain AP at --iou.",
)
@click.option(
    "--iou",
    type=Number(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="IoU a detection needs to find a face (with --annotations).",
)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save the precision-recall curves.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--overwrite", is_flag=True, help="Replace the --plot file if it exists.")
@fatal_input_errors
def evaluate(submission, ground_truth, annotations, iou, plot, as_json, overwrite) -> None:
    """Score SUBMISSION, a folder of WIDER result files (SUBMISSION/<event>/<name>.txt).

    With --ground-truth: the official protocol on the images the submission
    covers. With --annotations: AP against that file, faces flagged invalid or
    of zero size ignored.
    """
    from facegrid.eval.ap import average_precision
    from facegrid.eval.protocol import evaluate_wider
    from facegrid.wider.results import read_submission

    if (ground_truth is None) == (annotations is None):
        raise click.UsageError("give exactly one of --ground-truth and --annotations")
    if plot is not None:
        from facegrid.core.figures import check_figure_path

        check_figure_path(plot, [*submission.rglob("*"), annotations], overwrite)
    predictions = read_submission(submission)
    if ground_truth is not None:
        result = evaluate_wider(predictions, ground_truth)
        curves, aps = result.curves, result.ap
        report = {"protocol": "wider", "images": len(result.images), "ap": aps}
    else:
        curve = average_precision(predictions, read_annotations(annotations), iou=iou)
        curves, aps = {f"AP@{iou:g}": curve}, {f"AP@{iou:g}": curve.ap}
        report = {"protocol": "plain", "iou": iou, "faces": curve.num_faces, "ap": curve.ap}
    _report_ap(report, curves, aps, plot, f"{submission}", as_json)


def _report_ap(report: dict, curves: dict, aps: dict, plot: Path | None, title: str, as_json: bool) -> None:
    """Print an evaluation (``report`` with --json, else one AP a line) and save its curves with --plot."""
    from facegrid.eval.plots import plot_pr

    if plot is not None:
        plot_pr(curves, plot, title=title)
    if as_json:
        click.echo(json.dumps(report))
    else:
        for name, ap in aps.items():
            click.echo(f"{name:>8}: AP {ap:.4f}")
        if plot is not None:
            click.echo(f"wrote {plot}")


@main.command()
@click.argument("model", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help=f"A WIDER FACE folder: its {images_folder('val')} and {GROUND_TRUTH_FOLDER} are used.",
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help=f"The validation images, as <event>/<name> below it [default: DATA/{images_folder('val')}].",
)
@click.option(
    "--ground-truth",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help=f"The official ground truth folder [default: DATA/{GROUND_TRUTH_FOLDER}].",
)
@click.option("--size", type=int, callback=_detection_size, help=SIZE_HELP)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save the precision-recall curves.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Images run through a Keras model at once, as detect --batch-size batches them. A batch pads "
    "its images to the largest one's input, which moves the AP by about 0.002; 1 scores each image "
    "at its own input, as the model card does.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="CPU threads of a .tflite or .onnx model's runtime [default: all cores].",
)
@click.option("--overwrite", is_flag=True, help="Replace the --plot file if it exists.")
@fatal_input_errors
def val(model, data, images, ground_truth, size, plot, as_json, batch_size, threads, overwrite) -> None:
    """Detect in the WIDER FACE validation images and score MODEL with the official protocol, in one step.

    MODEL is a .keras detector or an export (.tflite and .onnx run without
    TensorFlow) [default: the bundled model, as int8 LiteRT where LiteRT is
    installed, else Keras]. Every box down to raw score 0.01 counts, as in a submission:
    the AP equals that of evaluate --ground-truth on the result files detect
    --wider-submission --batch-size N writes for the same images, on the
    images present. Nothing is written but the --plot.
    """
    from facegrid.core.config import model_settings_file
    from facegrid.core.figures import check_figure_path
    from facegrid.core.resources import default_model_path
    from facegrid.eval.validate import detect_at_floor, validation_set, wider_scores
    from facegrid.wider.layout import val_ground_truth, val_images
    from facegrid.wider.results import SCORE_FLOOR

    model = model if model is not None else default_model_path()
    if images is None or ground_truth is None:
        if data is None:
            raise click.UsageError("give --data, or both --images and --ground-truth")
        images, ground_truth = images or val_images(data), ground_truth or val_ground_truth(data)
    for folder, part in ((images, images_folder("val")), (ground_truth, GROUND_TRUTH_FOLDER)):
        if not folder.is_dir():
            raise PathError(folder, f"no such folder: is {data} a WIDER FACE folder (with {part})?")
    if plot is not None:
        check_figure_path(plot, [*images.rglob("*"), model, model_settings_file(model)], overwrite)
    chosen = validation_set(images, ground_truth)  # a wrong folder costs nothing yet
    detector = load_detector(model, input_size=size, threads=threads)
    progress = Progress(len(chosen.images), "image", boxes=f"boxes of raw score {SCORE_FLOOR:g} or more")
    found = detect_at_floor(detector, chosen.images, batch_size, progress=lambda dets: progress.count(len(dets.scores)))
    progress.close()
    result = wider_scores(chosen.keys, found, chosen.ground_truth)
    report = {"protocol": "wider", "images": len(result.images), "ap": result.ap}
    _report_ap(report, result.curves, result.ap, plot, f"{model.name} on {images}", as_json)
