"""``facegrid export``: a trained detector in the formats people deploy, its settings beside it."""

from __future__ import annotations

from pathlib import Path

import click

from facegrid.cli.app import fatal_input_errors, import_tensorflow, main, quiet_stderr
from facegrid.deploy.export import CALIBRATION_IMAGES
from facegrid.deploy.export import FORMATS as EXPORT_FORMATS


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "format_",
    multiple=True,
    type=click.Choice(list(EXPORT_FORMATS)),
    help="One per OUT, in their order [default: from each OUT's suffix: .keras, .tflite (float LiteRT) or .onnx]",
)
@click.option(
    "--detect-size",
    type=click.IntRange(32),
    help="Detection input size (longer side) to record [default: the model's].",
)
@click.option(
    "--fixed-size",
    type=click.IntRange(32),
    help="Export for S x S inputs and one image at a time (what mobile accelerators need) [default: any input size].",
)
@click.option(
    "--calibrate",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="litert-int8: a folder of training images (searched recursively) to calibrate on.",
)
@click.option(
    "--calibration-images",
    type=click.IntRange(1),
    default=CALIBRATION_IMAGES,
    show_default=True,
    help="litert-int8: images drawn from --calibrate, reproducibly.",
)
@click.option("--overwrite", is_flag=True, help="Replace each OUT and its settings file if they exist.")
@fatal_input_errors
def export(model, out, format_, detect_size, fixed_size, calibrate, calibration_images, overwrite) -> None:
    """Export MODEL (a .keras detector with its settings beside it) to each OUT.

    \b
    Writes each OUT and its settings (NAME.toml beside it), never an optimizer's state:
      keras        OUT.keras: the Keras model
      saved_model  OUT/: a TensorFlow SavedModel (serving_default signature)
      litert       OUT.tflite: float32 LiteRT
      litert-int8  OUT.tflite: int8, calibrated (first layers and heads' last convolutions float)
      onnx         OUT.onnx: ONNX (through tf2onnx: the export extra)
    Exports other than keras output per-stride scores and boxes (see facegrid.infer.runtimes);
    facegrid detect --model OUT runs any of them, .tflite and .onnx without TensorFlow.
    Several OUTs share one conversion, and are all written or none:
      facegrid export best.keras m.tflite m-int8.tflite m.onnx --format litert \\
        --format litert-int8 --format onnx --calibrate WIDER_train/images
    """
    if format_ and len(format_) != len(out):
        raise click.UsageError(f"give one --format per OUT ({len(out)}), or none; got {len(format_)}")
    from facegrid.infer.inputs import find_images

    calibration = [path for path, _ in find_images([calibrate])] if calibrate else []
    import_tensorflow()
    from facegrid.deploy.export import export_models

    try:
        with quiet_stderr():  # the converters' native notices
            paths = export_models(
                model,
                list(zip(out, format_ or [None] * len(out), strict=True)),
                detect_size=detect_size,
                fixed_size=fixed_size,
                calibration=calibration,
                calibration_images=calibration_images,
                overwrite=overwrite,
            )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    from facegrid.core.config import settings_path

    for path in paths:
        click.echo(f"wrote {path} and {settings_path(path)}")
