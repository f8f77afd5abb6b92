"""The ``facegrid`` command: a thin layer over the library.

Exit status of every command: 0 success, 1 problems found in the data,
2 the input cannot be used at all, or would give nothing (one line on
stderr, naming the file, ``FILE:LINE`` or image where there is one; never a
traceback).

TensorFlow loads only in the commands that need it, after their arguments
are checked; without ``-v`` its start-up lines stay off the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import signal
import sys
import time
from importlib import resources
from pathlib import Path

import click

from facegrid.core.config import (
    BACKBONE_STYLES,
    BUNDLED_IMAGENET,
    PIPELINES,
    STRATEGIES,
    Config,
    service_address,
)
from facegrid.core.errors import (
    AnnotationError,
    FacegridError,
    OutputExistsError,
    PathError,
    RunInUseError,
    SubmissionError,
)
from facegrid.data.screening import POLICIES
from facegrid.deploy.export import CALIBRATION_IMAGES
from facegrid.deploy.export import FORMATS as EXPORT_FORMATS
from facegrid.train.panels import PANEL_IMAGES
from facegrid.wider.annotations import read_annotations
from facegrid.wider.download import RELEASES
from facegrid.wider.fetch import STALL_BYTES, address_problem
from facegrid.wider.index import FaceFilter


class _Number(click.FloatRange):
    """A float option in a range, refusing ``nan`` and infinities, which a range alone lets through."""

    name = "number"

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()  # not "x<=None"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _sample_dataset() -> tuple[Path, Path]:
    root = Path(str(resources.files("facegrid") / "samples"))
    return root / "faces_bbx_gt.txt", root / "images"


def _one_line(text: str) -> str:
    """``text`` with line breaks, other control characters and undecodable bytes of names escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _fatal_input_errors(command):
    """Turn unusable input into exit status 2 and a one-line message."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
            sys.exit(1)
        except AnnotationError as error:
            message = f"not a readable WIDER annotation file: {error}"
        except SubmissionError as error:
            message = f"not a readable WIDER result file: {error}"
        except OutputExistsError as error:
            message = f"{error}: pass --overwrite to replace it"
        except RunInUseError as error:
            message = f"{error}: pass --resume to {'continue it' if error.finished else 'start it again with its settings'}, or choose another folder"
        except FacegridError as error:
            message = str(error)
        except OSError as error:
            message = ("" if error.filename is None else f"{error.filename}: ") + (error.strerror or str(error))
        click.echo(f"error: {_one_line(message)}", err=True)
        sys.exit(2)

    return wrapper


def _settings(path: Path | None, **overrides):
    """The detector settings of ``path`` (the defaults if None) with ``overrides``; any fault is a usage error."""
    from facegrid.core.config import load_config

    try:
        return load_config(path, **overrides)
    except ValueError as error:  # the flags alone are at fault
        raise click.UsageError(str(error)) from None


def _face_filter_options(command):
    options = [
        click.option("--keep-invalid", is_flag=True, help="Keep faces flagged invalid."),
        click.option("--min-size", type=_Number(), default=0.0, show_default=True,
                     help="Drop faces whose shorter side is below this (original pixels)."),
        click.option("--max-blur", type=click.IntRange(0, 2), default=None,
                     help="Drop faces blurrier than this (0 clear, 1 normal, 2 heavy)."),
        click.option("--max-occlusion", type=click.IntRange(0, 2), default=None,
                     help="Drop faces more occluded than this (0 none, 1 partial, 2 heavy)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _face_filter(keep_invalid, min_size, max_blur, max_occlusion) -> FaceFilter:
    return FaceFilter(drop_invalid=not keep_invalid, min_size=min_size, max_blur=max_blur, max_occlusion=max_occlusion)


class _Commands(click.Group):
    """The command group, reporting a usage mistake as one line (``error: ...``) instead of click's usage block."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            click.echo(f"error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)


@click.group(cls=_Commands)
@click.version_option(package_name="facegrid")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """facegrid: train and inspect tiny grid face detectors on WIDER-FACE-format data."""
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)  # facegrid.train.run logs INFO to train.log
    logging.basicConfig(level=terminal.level, format="%(levelname)s %(name)s: %(message)s", handlers=[terminal])
    if not verbose:
        # TensorFlow's C++ log, none of it: its "errors" here are notices (oneDNN falling back to Eigen),
        # and a real failure reaches Python as an exception
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            from absl import logging as absl_logging
        except ImportError:  # installed without TensorFlow (running exported models only)
            return
        absl_logging.set_verbosity(absl_logging.ERROR)


def _import_tensorflow() -> None:
    """Import TensorFlow; without -v, what its libraries write to stderr while they load is discarded.

    Those lines (absl's notice that logging is not initialised yet, oneDNN's
    notice) are written before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so only
    pointing stderr's file descriptor elsewhere for the import keeps them off
    the terminal. Python's own errors are raised after it is restored.
    """
    if "tensorflow" in sys.modules:
        return
    try:
        with _quiet_stderr():
            import tensorflow  # noqa: F401
    except ImportError:
        missing = click.ClickException(
            "this needs TensorFlow, which is not installed: pip install 'facegrid[train]' "
            "(exported .tflite and .onnx models run without it)"
        )
        missing.exit_code = 2
        raise missing from None


@contextlib.contextmanager
def _quiet_stderr():
    """Without -v, discard what native libraries write straight to stderr's file descriptor meanwhile."""
    if click.get_current_context().find_root().params["verbose"]:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@main.group()
def data() -> None:
    """Inspect a WIDER-FACE-format dataset (check, show, stats), pack it into shards, serve it to trainers."""


@data.command()
@click.option("--dispatcher", "dispatcher_port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Run TensorFlow's tf.data service dispatcher on PORT (0: any free port).")
@click.option("--worker", "dispatcher_address", metavar="HOST:PORT",
              help="Run a tf.data service worker for the dispatcher at HOST:PORT.")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Worker: its own port (0: any free port)  [default: 0].")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Dispatcher: keep its state here, so that a restarted dispatcher resumes its jobs; "
                   "one dispatcher at a time.")
@click.option("--wait", type=_Number(0, min_open=True), metavar="SECONDS",
              help="Worker: how long to wait for the dispatcher to answer before giving up "
                   f"[default: {Config.data_service_wait:g}].")
@_fatal_input_errors
def serve(dispatcher_port, dispatcher_address, port, work_dir, wait) -> None:
    """Serve input work to trainers on other hosts: a tf.data service dispatcher or worker.

    \b
    Start one dispatcher, then workers on any hosts that reach it:
      facegrid data serve --dispatcher 5050
      facegrid data serve --worker dispatcher-host:5050
    and train with --data-service dispatcher-host:5050. Runs until
    interrupted (Ctrl-C or SIGTERM), then says 'stopped' and exits with 0.
    A port another server holds is refused (exit status 2).
    """
    _check_serve_options(dispatcher_port, dispatcher_address, port, work_dir, wait)
    server = None
    with _stopped_by_signals():
        try:
            _import_tensorflow()
            server = _start_server(dispatcher_port, dispatcher_address, port, work_dir, wait)
            while True:
                time.sleep(3600)  # a signal's handler runs here at once, where join() would block in C++
        except KeyboardInterrupt:
            if server is not None:
                server.stop()
            click.echo("stopped", err=True)


@contextlib.contextmanager
def _stopped_by_signals():
    """Meanwhile the first SIGINT or SIGTERM (unless ignored) raises KeyboardInterrupt; after, the handlers before.

    The first only: ``timeout`` and process supervisors may signal twice, and
    a second KeyboardInterrupt would cut the server's stop short.
    """
    stops = [stop for stop in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(stop) is not signal.SIG_IGN]

    def interrupt(signum, frame):
        for stop in stops:
            signal.signal(stop, signal.SIG_IGN)
        raise KeyboardInterrupt

    before = {stop: signal.signal(stop, interrupt) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in before.items():
            signal.signal(stop, handler)


def _check_serve_options(dispatcher_port, dispatcher_address, port, work_dir, wait) -> None:
    """Refuse a ``data serve`` that names no role or both, an option of the other role, or a bad address."""
    if (dispatcher_port is None) == (dispatcher_address is None):
        raise click.UsageError("give exactly one of --dispatcher PORT and --worker HOST:PORT")
    for flag, value, of_dispatcher in (("--port", port, False), ("--wait", wait, False),
                                       ("--work-dir", work_dir, True)):
        if value is not None and of_dispatcher != (dispatcher_port is not None):
            raise click.UsageError(f"{flag} goes with {'--dispatcher' if of_dispatcher else '--worker'} only")
    if dispatcher_address is not None:
        try:
            service_address(dispatcher_address)
        except ValueError as error:
            raise click.UsageError(f"--worker: {error}") from None


def _start_server(dispatcher_port, dispatcher_address, port, work_dir, wait):
    """The dispatcher or worker ``data serve`` asks for, started, its address said."""
    from facegrid.scale import service

    if dispatcher_port is not None:
        server = service.start_dispatcher(dispatcher_port, None if work_dir is None else str(work_dir))
        click.echo(f"tf.data service dispatcher at {server.target}", err=True)
    else:
        server = service.start_worker(dispatcher_address, port or 0, wait=wait or Config.data_service_wait,
                                      notice=_notice)
        click.echo(f"tf.data service worker for {dispatcher_address}", err=True)
    return server


def _notice(line: str) -> None:
    """Say a line the user must see (what a command waits for), with or without -v."""
    click.echo(_one_line(line), err=True)


@data.command()
@click.argument("annotations", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder the annotation paths are relative to; every image is opened.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Threads decoding images [default: CPUs].")
@_fatal_input_errors
def check(annotations: Path, images: Path | None, as_json: bool, workers: int | None) -> None:
    """Check ANNOTATIONS (and with --images every image it lists), or a folder data pack wrote.

    Errors (missing or unreadable images, a face box wholly outside its
    image) make the exit status 1; warnings (invalid or zero-size faces,
    boxes reaching outside their image, tolerated format quirks) are reported
    but do not. When --images holds none of the images, a subfolder or parent
    that does is named. A packed folder (ANNOTATIONS holding manifest.json):
    every shard's sha256 and example count against the manifest, every
    example parsed, every image decoded to the size stored with it.
    """
    from facegrid.data.check import check_dataset, check_packed

    progress = not as_json and sys.stderr.isatty()
    if annotations.is_dir():
        if images is not None:
            raise click.UsageError("--images goes with an annotation file: a packed folder holds its images")
        _import_tensorflow()
        report = check_packed(annotations, workers=workers, progress=progress)
    else:
        report = check_dataset(annotations, images, workers=workers, progress=progress)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"{annotations}: {report.images:,} images, {report.faces:,} face rows")
        if images is not None:
            click.echo(f"images opened from {images}")
        for title, found in (("errors", report.errors), ("warnings", report.warnings)):
            click.echo(f"{title}:" + ("" if found else " none"))
            for kind, count in sorted(found.items()):
                click.echo(f"  {kind}: {count:,}")
                for place in report.examples[kind]:
                    click.echo(f"      {place}")
                if count > len(report.examples[kind]):
                    click.echo(f"      ... and {count - len(report.examples[kind]):,} more")
        if report.no_image_found:
            click.echo(f"none of the images is in {images}" + (
                f"; they are in {report.nearby_images}: pass --images {report.nearby_images}"
                if report.nearby_images else ": is it the folder the annotation paths are relative to?"))
    sys.exit(0 if report.ok else 1)


@data.command()
@click.argument("annotations", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder the annotation paths are relative to.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the shards and manifest.json.")
@click.option("--shards", type=click.IntRange(1), help="Number of shards  [default: enough for 100-200 MB each].")
@click.option("--name", default="widerface", show_default=True, help="Dataset name, the shard names' first part.")
@click.option("--split", help="Split name  [default: train, val or test as ANNOTATIONS' name says, else train].")
@click.option("--workers", type=click.IntRange(1), default=None, help="Threads reading images [default: CPUs].")
@click.option("--on-bad-image", type=click.Choice(POLICIES), default=Config.on_bad_image, show_default=True,
              help="An unusable image stops the pack (exit status 2), or is left out, reported and "
                   "listed in the manifest (exit status 1).")
@click.option("--overwrite", is_flag=True, help="Replace the packed set in a folder that is not empty.")
@_fatal_input_errors
def pack(annotations, images, out, shards, name, split, workers, on_bad_image, overwrite) -> None:
    """Pack ANNOTATIONS and its images into TFRecord shards and a manifest.json in --out.

    Each image is one tf.train.Example (see facegrid.data.tf.records): the file's
    bytes as stored, its upright size, EXIF orientation, path, and every
    face's box and attributes. Shards are written under temporary names and
    renamed once all are complete; the same input gives the same bytes.
    """
    index = read_annotations(annotations)
    _import_tensorflow()
    from facegrid.data.tf.pack import pack_dataset

    verbose = click.get_current_context().find_root().params["verbose"]
    start = time.perf_counter()
    try:
        manifest = pack_dataset(index, images, out, shards=shards, name=name, split=split, workers=workers,
                                on_bad_image=on_bad_image, overwrite=overwrite, progress=verbose or sys.stderr.isatty())
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    seconds = time.perf_counter() - start
    for entry in manifest.skipped:
        click.echo("skipped " + _one_line(f"{images / entry['image']}: {entry['reason']}"), err=True)
    click.echo(f"packed {manifest.images:,} images, {manifest.faces:,} faces into {len(manifest.shards)} shard(s) "
               f"in {out}: {manifest.bytes / 1e6:,.1f} MB, {manifest.images / seconds:,.0f} images/s"
               + (f"; {manifest.skipped_images:,} skipped" if manifest.skipped else ""))
    sys.exit(1 if manifest.skipped else 0)


@data.command()
@click.argument("annotations", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder the annotation paths are relative to (required with ANNOTATIONS).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("facegrid-show"),
              show_default=True, help="Folder for the PNGs.")
@click.option("--count", type=click.IntRange(1), default=8, show_default=True, help="Images to show.")
@click.option("--input-size", type=click.IntRange(32),
              help=f"Side of the square input  [default: {Config.input_size}].")
@click.option("--grid-size", type=click.IntRange(1), help=f"Side of a single grid  [default: {Config.grid_size}].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Take the input size, target layout and crops of these detector settings (TOML), "
                   "e.g. src/facegrid/models/facegrid-wider.toml for the bundled model's pyramid.")
@click.option("--augment", is_flag=True, help="Show the training augmentation instead of the plain input.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the augmentation.")
@click.option("--overwrite", is_flag=True, help="Replace PNGs of an earlier run in --out.")
@_face_filter_options
@_fatal_input_errors
def show(annotations, images, out, count, input_size, grid_size, config_path, augment, seed, overwrite,
         **filter_args) -> None:
    """Draw images with their boxes next to the network input and its decoded target.

    Without ANNOTATIONS, shows facegrid's bundled sample dataset. Green boxes
    are training targets, red ones faces the filter leaves out; on the right,
    the grid and the boxes decoded back from the target (yellow). A pyramid
    (--config with strides) is drawn level by level: positive cells filled,
    ignore cells grey.
    """
    from facegrid.core.codec import GridCodec
    from facegrid.data.augment import Augment
    from facegrid.data.examples import ExampleBuilder
    from facegrid.data.show import show_dataset

    if annotations is None:
        annotations, images = _sample_dataset()
        click.echo(f"showing the bundled sample dataset ({annotations})")
    elif images is None:
        raise click.UsageError("--images is required with ANNOTATIONS")
    if config_path is not None:
        if input_size is not None or grid_size is not None:
            raise click.UsageError("--config sets the input size and layout: leave out --input-size and --grid-size")
        config = _settings(config_path)
        builder = ExampleBuilder(config.input_size, config.codec, Augment(crop_scale=config.crop_scale) if augment else None)
    else:
        builder = ExampleBuilder(input_size or Config.input_size, GridCodec(grid_size or Config.grid_size),
                                 Augment() if augment else None)
    written, failed = show_dataset(
        read_annotations(annotations), images, out, count=count, builder=builder,
        face_filter=_face_filter(**filter_args), seed=seed, overwrite=overwrite,
    )
    for path in written:
        click.echo(f"wrote {path}")
    for error in failed:
        click.echo(f"skipped {error}", err=True)
    sys.exit(1 if failed else 0)


@data.command()
@click.argument("annotations", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Image folder, to read image sizes (else estimated from the boxes).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save a plot (PNG).")
@click.option("--input-size", type=click.IntRange(32), default=Config.input_size, show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Detector settings (TOML) whose pyramid's share to report too (default: the bundled model's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--overwrite", is_flag=True, help="Replace the --out plot if it exists.")
@_face_filter_options
@_fatal_input_errors
def stats(annotations, images, out, input_size, config_path, as_json, overwrite, **filter_args) -> None:
    """Faces per image, face sizes, and the share of faces each target layout can represent.

    Shares are given for 7x7, 14x14 and 28x28 grids over the square
    input, and for the pyramid of the detector settings (the bundled model's
    unless --config), at their detection size.
    """
    from facegrid.core.figures import check_figure_path
    from facegrid.core.resources import bundled_model_path
    from facegrid.data.stats import dataset_stats, plot_stats

    config = _settings(config_path or bundled_model_path().with_suffix(".toml"))
    pyramid = (config.codec, config.detection_input_size) if config.strides else None
    index = read_annotations(annotations)
    if out is not None:
        read = [annotations] + ([images / name for name in index.paths.tolist()] if images else [])
        check_figure_path(out, read, overwrite)
    result = dataset_stats(index, images, face_filter=_face_filter(**filter_args), input_size=input_size,
                           pyramid=pyramid)
    if out is not None:
        plot_stats(result, out, title=f"{annotations.name}: {result.images:,} images, {result.faces:,} faces")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    summary = result.to_dict()
    per_image = summary["faces_per_image"]
    click.echo(f"{annotations}: {result.images:,} images, {result.face_rows:,} face rows, "
               f"{result.faces:,} faces after filtering")
    click.echo(f"faces per image: mean {per_image['mean']:.1f}, median {per_image['median']:.0f}, "
               f"max {per_image['max']}, {per_image['without_faces']:,} images without faces")
    click.echo("face size sqrt(w*h), original pixels: "
               + ", ".join(f"{k} {v}" for k, v in summary["face_size_px_percentiles"].items()))
    click.echo(f"\nface size in pixels of the {input_size}px input:")
    click.echo(f"  {'pixels':>10}  {'faces':>9}  {'share':>6}")
    for label, count, share in result.size_table():
        click.echo(f"  {label:>10}  {count:>9,}  {share:>6.1%}")
    click.echo("\nfaces with a cell of their own (grids: one face per cell, over the square input):")
    click.echo(f"  {'layout':>22}  {'share':>6}")
    for layout, share in result.representable.items():
        click.echo(f"  {layout:>22}  {share:>6.1%}")
    if result.sizes_estimated:
        click.echo(f"\n{result.sizes_estimated:,} of {result.images:,} image sizes were estimated from the "
                   "extent of their boxes, a lower bound: shares and input-pixel sizes above run a few points "
                   "high" + ("" if images else " (pass --images to read the sizes)"))
    if out is not None:
        click.echo(f"wrote {out}")


@main.command()
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path),
              help="Training annotations (WIDER FACE format).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder the training annotation paths are relative to.")
@click.option("--packed", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of --annotations and --images: a folder facegrid data pack wrote, read from its "
                   "shards (pipeline puretf).")
@click.option("--val-annotations", type=click.Path(dir_okay=False, path_type=Path),
              help="Validation annotations: enables val AP, best.keras, early stopping and panels.")
@click.option("--val-images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder the validation annotation paths are relative to.")
@click.option("--val-ground-truth", metavar="DIR|none",
              help="The official WIDER FACE eval_tools/ground_truth folder: validation on WIDER val images also "
                   "logs val_easy, val_medium and val_hard AP each epoch; 'none' for val_ap only  [default: "
                   "DATA/eval_tools/ground_truth for --val-annotations DATA/wider_face_split/FILE, where it "
                   "exists and lists every validation image].")
@click.option("--panels-every", type=click.IntRange(0), metavar="N",
              help=f"Every N epochs, draw the detections and faces of {PANEL_IMAGES} validation images into "
                   f"RUN/panels/epoch_NNN.jpg; 0 for none  [default: {Config.panels_every}].")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config, log, curves, checkpoints, panels, TensorBoard logs.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file of settings (see facegrid.core.config.Config).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --run from its last finished epoch; without it, a run folder in use is refused.")
@click.option("--epochs", type=click.IntRange(1), help=f"Epochs of the whole run [default: {Config.epochs}].")
@click.option("--batch-size", type=click.IntRange(1),
              help=f"Images a step (the global batch under a strategy) [default: {Config.batch_size}].")
@click.option("--learning-rate", type=_Number(0, min_open=True),
              help=f"Peak AdamW learning rate, after warm-up, before cosine decay [default: {Config.learning_rate}].")
@click.option("--input-size", type=click.IntRange(32),
              help=f"Side of the square training input, a multiple of 32 [default: {Config.input_size}].")
@click.option("--grid-size", type=click.IntRange(1),
              help=f"Side of a single-grid model's output grid (0 in a settings file with strides) "
                   f"[default: {Config.grid_size}].")
@click.option("--alpha", type=_Number(0, min_open=True), help=f"MobileNetV2 width multiplier [default: {Config.alpha}].")
@click.option("--backbone-weights",
              help=f"'{BUNDLED_IMAGENET}' (torchvision's ImageNet MobileNetV2, shipped with facegrid: alpha 1.0, "
                   "backbone style torchvision), 'none' (random), 'imagenet' (Keras' weights, downloaded: needs "
                   "internet and --backbone-style keras), a .weights.h5 file or a facegrid .keras model's backbone "
                   f"[default: {Config.backbone_weights}].")
@click.option("--backbone-style", type=click.Choice(BACKBONE_STYLES),
              help="MobileNetV2 as keras.applications builds it, or with torchvision's padding and batch-norm "
                   f"epsilon (what torchvision's weights need) [default: {Config.backbone_style}].")
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Fine-tune: start from this facegrid .keras model's weights (the bundled one: "
                   "src/facegrid/models/facegrid-wider.keras); without --config, its settings too.")
@click.option("--pipeline", type=click.Choice(PIPELINES),
              help="Input pipeline: tf.data (faster), FaceSequence, or tf.data of TensorFlow ops only "
                   f"(puretf: JPEGs only; what a tf.data service runs) [default: {Config.pipeline}].")
@click.option("--data-service", metavar="HOST:PORT",
              help="Read the batches from the tf.data service dispatcher at HOST:PORT (facegrid data serve); "
                   "needs --pipeline puretf (or --packed).")
@click.option("--data-service-wait", type=_Number(0, min_open=True), metavar="SECONDS",
              help="With --data-service: how long to wait for its dispatcher to answer and a worker to register "
                   f"before giving up [default: {Config.data_service_wait:g}].")
@click.option("--workers", type=click.IntRange(1),
              help=f"Images decoded at once (tf.data) or batch-building workers (sequence) [default: {Config.workers}].")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help=f"tf.distribute strategy: one device, all local devices (mirrored), or the cluster in "
                   f"TF_CONFIG (multi-worker; the chief writes --run)  [default: {Config.strategy}].")
@click.option("--on-bad-image", type=click.Choice(POLICIES),
              help="An unusable image, training or validation, stops training (raise, the default) "
                   "or is left out, logged and counted (skip).")
@click.option("--seed", type=int, help=f"Seed of data order, augmentation and initialisation [default: {Config.seed}].")
@_fatal_input_errors
def train(annotations, images, packed, val_annotations, val_images, run_dir, config_path, resume,
          **overrides) -> None:
    """Train a detector; flags override the --config file, which overrides the defaults."""
    if packed is not None:
        if annotations is not None or images is not None:
            raise click.UsageError("give --packed or --annotations with --images, not both")
        if overrides["pipeline"] not in (None, "puretf"):
            raise click.UsageError(f"--packed is read by --pipeline puretf, not {overrides['pipeline']}")
        overrides["pipeline"], images = "puretf", packed
    elif annotations is None or images is None:
        raise click.UsageError("give --annotations and --images (or --packed)")
    if (val_annotations is None) != (val_images is None):
        raise click.UsageError("--val-annotations and --val-images go together")
    for option in ("val_ground_truth", "panels_every"):
        if val_annotations is None and overrides[option] is not None:
            raise click.UsageError(f"--{option.replace('_', '-')} needs a validation set (--val-annotations)")
    if resume and config_path is None:
        config_path = run_dir / "config.toml"
    elif overrides.get("init") and config_path is None:  # fine-tuning: the model's own network
        from facegrid.core.config import model_settings_file

        config_path = model_settings_file(overrides["init"])
        if config_path is None:
            raise click.UsageError(f"--init {overrides['init']}: no settings beside it; give them with --config")
    config = _settings(config_path, **overrides)
    if overrides["data_service_wait"] is not None and not config.data_service:
        raise click.UsageError("--data-service-wait needs --data-service (a tf.data service to wait for)")
    from facegrid.train.folder import check_run_folder, writes_run_folder

    try:
        writes_run_folder(config)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    check_run_folder(run_dir, config, resume)  # training checks again; here before Keras loads
    _import_tensorflow()
    from facegrid.train.run import (
        train as run_training,  # Keras loads only once the settings are sound
    )

    try:
        run_training(config, annotations, images, run_dir, val_annotations=val_annotations,
                     val_images=val_images, resume=resume, notice=_notice)
    except ValueError as error:
        text = " ".join(str(error).split())
        if config.strategy != "multi-worker" or "PerReplica" not in text:
            raise
        # Keras 3's fit cannot build a model from a multi-worker strategy's per-replica batch
        start = text.find("with an unsupported type")
        raise click.ClickException(
            "multi-worker training stopped in Keras' fit before its first step (a Keras 3 limitation): "
            f"a per-replica batch {text[start:] if start >= 0 else text[-200:]}; on one host, use --strategy mirrored"
        ) from None
    click.echo(f"run saved in {run_dir}")


def _load_detector(model_path: Path | None, **settings):
    """The detector of ``model_path`` (the bundled model if None); TensorFlow loads only for a Keras model."""
    from facegrid.infer.detector import Detector
    from facegrid.infer.runtimes import is_exported

    if model_path is None or not is_exported(model_path):
        _import_tensorflow()
    try:
        with _quiet_stderr():  # LiteRT's native notice that XNNPACK is on
            return Detector.load(model_path, **settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


class _Progress:
    """A progress bar with an ETA on stderr (on a terminal, or with -v), then a one-line summary there.

    Results go to stdout through :meth:`echo`, which keeps them clear of the
    bar; stdout stays the results' alone, so ``--json`` output pipes cleanly.
    """

    def __init__(self, total: int | None, unit: str, boxes: str = "face(s)"):
        from tqdm import tqdm

        shown = click.get_current_context().find_root().params["verbose"] or sys.stderr.isatty()
        self.bar = tqdm(total=total, unit=f" {unit}", disable=not shown, file=sys.stderr, leave=False,
                        dynamic_ncols=True)
        self.boxes_name = boxes
        self.images = self.frames = self.videos = self.boxes = 0
        self.start = time.perf_counter()

    def echo(self, line: str, err: bool = False) -> None:
        if self.bar.disable:
            click.echo(line, err=err)
        else:
            self.bar.write(line, file=sys.stderr if err else sys.stdout)

    def count(self, boxes: int, frame: bool = False) -> None:
        """One image (or video frame) done, with ``boxes`` boxes."""
        self.boxes += boxes
        if frame:
            self.frames += 1
        else:
            self.images += 1
        self.bar.update()

    def close(self) -> None:
        """Remove the bar and write the summary: what was read, the boxes found, and the rate."""
        self.bar.close()
        seconds = time.perf_counter() - self.start
        parts = [f"{self.images:,} image(s)"] if self.images or not self.frames else []
        if self.frames:
            parts.append(f"{self.frames:,} frame(s) of {self.videos:,} video(s)")
        unit = " and ".join(name for name, n in (("images", self.images), ("frames", self.frames)) if n) or "images"
        rate = (self.images + self.frames) / seconds if seconds > 0 else 0.0
        click.echo(f"{' and '.join(parts)}: {self.boxes:,} {self.boxes_name} in {seconds:.1f} s, "
                   f"{rate:,.1f} {unit}/s", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="A .keras detector, or an export of one (.tflite, .onnx: no TensorFlow needed; a SavedModel "
                   "folder), its settings beside it [default: the bundled model].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write annotated images (and videos) here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image (per video frame) on stdout.")
@click.option("--threshold", type=_Number(0, 1),
              help="Minimum score of a reported face [default: the model's score_threshold setting, "
                   f"else {Config.score_threshold}].")
@click.option("--nms-iou", type=_Number(0, 1),
              help=f"[default: the model's nms_iou setting, else {Config.nms_iou}]")
@click.option("--wider-submission", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the official WIDER FACE result files (every box down to score 0.01) "
                   "as DIR/<event>/<name>.txt, for images at INPUT/<event>/<name> (INPUT a folder).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Images (frames) run through a Keras model at once (LiteRT runs one at a time).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads of a .tflite or .onnx model's runtime [default: all cores].")
@click.option("--on-bad-image", type=click.Choice(POLICIES), default=Config.on_bad_image, show_default=True,
              help="An unreadable image or video stops the run (exit status 2), or is reported and skipped "
                   "(the others are still processed; exit status 1).")
@click.option("--overwrite", is_flag=True,
              help="Replace annotated copies and result files that exist (never an input).")
@_fatal_input_errors
def detect(inputs, model_path, out, as_json, threshold, nms_iou, wider_submission, batch_size, threads,
           on_bad_image, overwrite) -> None:
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
    from facegrid.core.config import model_settings_file
    from facegrid.core.errors import VideoError
    from facegrid.core.files import check_outputs
    from facegrid.core.resources import bundled_model_path
    from facegrid.infer.inputs import (
        annotated_names,
        find_images,
        is_video,
        submission_keys,
    )
    from facegrid.infer.video import probe_video
    from facegrid.wider.results import SCORE_FLOOR, result_path

    found = find_images(inputs, videos=True)
    keys = submission_keys(found) if wider_submission else [None] * len(found)
    targets = [out / name for name in annotated_names(found)] if out else [None] * len(found)
    model_file = model_path or bundled_model_path()
    check_outputs(
        [target for target in targets if target is not None]
        + [result_path(wider_submission, key) for key in keys if key is not None],
        [path for path, _ in found] + [model_file, model_settings_file(model_file) or model_file],
        overwrite,
    )
    failed = []
    echo = click.echo  # through the progress bar once it shows

    def skipped(error: PathError) -> None:
        echo(f"skipped {_one_line(str(error))}", err=True)
        failed.append(error)

    videos = {}
    for path, _ in found:
        if is_video(path):
            try:
                with _quiet_stderr():  # FFmpeg's own lines about a file it cannot read
                    videos[path] = probe_video(path)
            except VideoError as error:
                if on_bad_image != "skip":
                    raise
                skipped(error)
    plan = [(path, target, key) for (path, _), target, key in zip(found, targets, keys)
            if not is_video(path) or path in videos]

    detector = _load_detector(model_path, score_threshold=threshold, nms_iou=nms_iou, threads=threads)
    threshold = detector.score_threshold  # the option's, else the model's setting
    if wider_submission:
        detector.score_threshold = min(threshold, SCORE_FLOOR)
    counts = [videos[path].frames if is_video(path) else 1 for path, _, _ in plan]
    kinds = {is_video(path) for path, _, _ in plan}
    progress = _Progress(sum(counts) if all(counts) else None,  # None: a container states no frame count
                         "frame" if kinds == {True} else "image" if kinds == {False} else "image|frame")
    echo = progress.echo
    for video, group in itertools.groupby(plan, key=lambda item: is_video(item[0])):
        group = list(group)
        if video:
            for path, target, _ in group:
                _detect_video(detector, path, target, videos[path], batch_size, as_json, progress)
            continue
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            results = detector.detect([image for image, _, _ in chunk], batch_size=batch_size,
                                      on_unreadable=skipped if on_bad_image == "skip" else None)
            for (image, target, key), result in zip(chunk, results):
                if result is not None:
                    _report_detections(result, image, target, key, as_json, threshold, wider_submission, echo)
                    progress.count(len(result.scores))
    progress.close()
    sys.exit(1 if failed else 0)


def _report_detections(found, image, target, key, as_json, threshold, wider_submission, echo) -> None:
    """Write one image's detections as the detect command's options ask."""
    from facegrid.core.draw import annotated_image
    from facegrid.core.files import write_atomically
    from facegrid.data.images import read_image
    from facegrid.wider.results import write_image_result

    if wider_submission:
        write_image_result(wider_submission, key, found.boxes, found.scores)
    shown = found.scores >= threshold
    found.boxes, found.scores = found.boxes[shown], found.scores[shown]
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        drawn = annotated_image(read_image(image), found.boxes, found.scores)
        write_atomically(target, lambda tmp: drawn.save(tmp, format="JPEG", quality=90))
    if as_json:
        echo(json.dumps(found.to_dict()))
    else:
        echo(f"{image}: {len(found.scores)} face(s)" + (f" -> {target}" if target is not None else ""))


def _detect_video(detector, path, target, info, batch_size, as_json, progress: _Progress) -> None:
    """Detect in every frame of one video: its annotated copy, a JSON line per frame or one line for it."""
    from facegrid.infer.video import detect_video

    faces = frames = 0
    for frame in detect_video(detector, path, target, batch_size=batch_size, info=info):
        if as_json:
            progress.echo(json.dumps(frame.to_dict()))
        faces += len(frame.found.scores)
        frames += 1
        progress.count(len(frame.found.scores), frame=True)
    progress.videos += 1
    if not as_json:
        progress.echo(f"{path}: {frames} frame(s), {faces} face(s)" + (f" -> {target}" if target is not None else ""))


@main.command()
@click.argument("submission", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--ground-truth", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The official eval_tools/ground_truth folder: WIDER easy/medium/hard AP.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Any WIDER-format annotation file: plain AP at --iou.")
@click.option("--iou", type=_Number(0, 1, min_open=True), default=0.5, show_default=True,
              help="IoU a detection needs to find a face (with --annotations).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save the precision-recall curves.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--overwrite", is_flag=True, help="Replace the --plot file if it exists.")
@_fatal_input_errors
def evaluate(submission, ground_truth, annotations, iou, plot, as_json, overwrite) -> None:
    """Score SUBMISSION, a folder of WIDER result files (SUBMISSION/<event>/<name>.txt).

    With --ground-truth: the official protocol on the images the submission
    covers. With --annotations: AP against that file, faces flagged invalid or
    of zero size ignored.
    """
    from facegrid.eval.wider import average_precision, evaluate_wider
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
    from facegrid.eval.wider import plot_pr

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
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A WIDER FACE folder: its WIDER_val/images and eval_tools/ground_truth are used.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The validation images, as <event>/<name> below it [default: DATA/WIDER_val/images].")
@click.option("--ground-truth", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The official ground truth folder [default: DATA/eval_tools/ground_truth].")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Save the precision-recall curves.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True,
              help="Images run through a Keras model at once, as detect --batch-size batches them. A batch pads "
                   "its images to the largest one's input, which moves the AP by about 0.002; 1 scores each image "
                   "at its own input, as the model card does.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads of a .tflite or .onnx model's runtime [default: all cores].")
@click.option("--overwrite", is_flag=True, help="Replace the --plot file if it exists.")
@_fatal_input_errors
def val(model, data, images, ground_truth, plot, as_json, batch_size, threads, overwrite) -> None:
    """Detect in the WIDER FACE validation images and score MODEL with the official protocol, in one step.

    MODEL is a .keras detector or an export (.tflite and .onnx run without
    TensorFlow). Every box down to score 0.01 counts, as in a submission:
    the AP equals that of evaluate --ground-truth on the result files detect
    --wider-submission --batch-size N writes for the same images, on the
    images present. Nothing is written but the --plot.
    """
    from facegrid.eval.wider import evaluate_wider, load_wider_ground_truth
    from facegrid.infer.inputs import find_images, submission_keys
    from facegrid.wider.results import SCORE_FLOOR, as_submitted

    if images is None or ground_truth is None:
        if data is None:
            raise click.UsageError("give --data, or both --images and --ground-truth")
        images = images or data / "WIDER_val" / "images"
        ground_truth = ground_truth or data / "eval_tools" / "ground_truth"
    for folder, part in ((images, "WIDER_val/images"), (ground_truth, "eval_tools/ground_truth")):
        if not folder.is_dir():
            raise PathError(folder, f"no such folder: is {data} a WIDER FACE folder (with {part})?")
    found = find_images([images])
    if plot is not None:
        from facegrid.core.config import model_settings_file
        from facegrid.core.figures import check_figure_path

        check_figure_path(plot, [path for path, _ in found] + [model, model_settings_file(model)], overwrite)
    keys = submission_keys(found)
    truth = load_wider_ground_truth(ground_truth)  # a wrong folder costs nothing yet
    unknown = truth.unlisted(keys)
    if unknown:
        raise PathError(ground_truth, f"does not list {len(unknown):,} of the {len(keys):,} images in {images}, "
                                      f"such as {unknown[0]}: are they validation images?")
    detector = _load_detector(model, score_threshold=SCORE_FLOOR, threads=threads)
    progress = _Progress(len(found), "image", boxes=f"boxes scoring {SCORE_FLOOR:g} or more")
    predictions = {}
    for start in range(0, len(found), batch_size):
        chunk = found[start : start + batch_size]
        results = detector.detect([image for image, _ in chunk], batch_size=batch_size)
        for key, result in zip(keys[start : start + batch_size], results):
            predictions[key] = as_submitted(key, result.boxes, result.scores)
            progress.count(len(result.scores))
    progress.close()
    result = evaluate_wider(predictions, truth)
    report = {"protocol": "wider", "images": len(result.images), "ap": result.ap}
    _report_ap(report, result.curves, result.ap, plot, f"{model.name} on {images}", as_json)


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "format_", type=click.Choice(list(EXPORT_FORMATS)),
              help="[default: from OUT's suffix: .keras, .tflite (float LiteRT) or .onnx]")
@click.option("--detect-size", type=click.IntRange(32),
              help="Detection input size (longer side) to record [default: the model's].")
@click.option("--fixed-size", type=click.IntRange(32),
              help="Export for S x S inputs and one image at a time (what mobile accelerators need) "
                   "[default: any input size].")
@click.option("--calibrate", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="litert-int8: a folder of training images (searched recursively) to calibrate on.")
@click.option("--calibration-images", type=click.IntRange(1), default=CALIBRATION_IMAGES, show_default=True,
              help="litert-int8: images drawn from --calibrate, reproducibly.")
@click.option("--overwrite", is_flag=True, help="Replace OUT and its settings file if they exist.")
@_fatal_input_errors
def export(model, out, format_, detect_size, fixed_size, calibrate, calibration_images, overwrite) -> None:
    """Export MODEL (a .keras detector with its settings beside it) to OUT.

    \b
    Writes OUT and OUT's settings (NAME.toml beside it), never an optimizer's state:
      keras        OUT.keras: the Keras model
      saved_model  OUT/: a TensorFlow SavedModel (serving_default signature)
      litert       OUT.tflite: float32 LiteRT
      litert-int8  OUT.tflite: int8, calibrated (first layers and heads' last convolutions float)
      onnx         OUT.onnx: ONNX (through tf2onnx: the export extra)
    Exports other than keras output per-stride scores and boxes (see facegrid.infer.runtimes);
    facegrid detect --model OUT runs any of them, .tflite and .onnx without TensorFlow.
    """
    from facegrid.infer.inputs import find_images

    calibration = [path for path, _ in find_images([calibrate])] if calibrate else []
    _import_tensorflow()
    from facegrid.deploy.export import export_model

    try:
        with _quiet_stderr():  # the converters' native notices
            path = export_model(model, out, format_, detect_size=detect_size, fixed_size=fixed_size,
                                calibration=calibration, calibration_images=calibration_images, overwrite=overwrite)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    from facegrid.core.config import settings_path

    click.echo(f"wrote {path} and {settings_path(path)}")


@main.command()
@click.argument("dataset", type=click.Choice(sorted(RELEASES)))
@click.option("--to", "to", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder to fill (created if need be); archives are kept in its archives/.")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="Base URL of a mirror to try first (repeatable; ARCHIVE is fetched from URL/ARCHIVE).")
@click.option("--only", multiple=True, metavar="ARCHIVE", help="Fetch only this archive (repeatable).")
@click.option("--timeout", type=_Number(0, 3600, min_open=True), default=30.0, show_default=True,
              help="Seconds to wait for a connection, then for an answer; after its first byte a mirror must "
                   f"send {STALL_BYTES // 1024} KiB in every such span, or it is given up as stalled and the next "
                   "mirror tried.")
@click.option("--trust-unpinned", is_flag=True,
              help="Take an archive facegrid pins no sha256 for as a mirror serves it (its digest is printed).")
@click.option("--overwrite", is_flag=True,
              help="Replace files in the dataset folder that differ from the archives' (else they are refused).")
@_fatal_input_errors
def download(dataset, to, mirrors, only, timeout, trust_unpinned, overwrite) -> None:
    """Download DATASET's archives and unpack them into the layout the other commands read.

    Each archive is checked against the sha256 facegrid pins for it; an
    archive with none pinned is refused unless --trust-unpinned. A mirror
    that fails (HTTP error, timeout or stall, more bytes than pinned, wrong
    digest) costs one line on stderr and the next mirror is tried; a download cut off resumes where it
    stopped, and what is already in place is not fetched again. A file in
    the dataset folder that differs from an archive's is refused unless
    --overwrite. Exit status 1 when some archives could not be put in
    place, 2 when none could.
    """
    from facegrid.wider.download import install_archive

    release = RELEASES[dataset]
    for url in mirrors:
        problem = address_problem(url)
        if problem is not None:
            raise click.UsageError(f"--mirror {url!r}: {problem}")
    names = [archive.name for archive in release.archives]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise click.UsageError(f"--only {unknown[0]!r}: {dataset} has no such archive (it has {', '.join(names)})")
    verbose = click.get_current_context().find_root().params["verbose"]
    placed = []
    for archive in release.archives:
        if only and archive.name not in only:
            continue
        outcome = install_archive(
            archive, to, mirrors + release.mirrors, trust_unpinned=trust_unpinned, overwrite=overwrite,
            timeout=timeout, progress=verbose or sys.stderr.isatty(),
            notice=lambda line: click.echo(_one_line(line), err=True),
        )
        hint = "; --trust-unpinned takes the copy a mirror serves" if outcome.unpinned else ""
        click.echo(_one_line(outcome.message + hint), err=not outcome.ok)
        placed.append(outcome.ok)
    if not any(placed):
        click.echo("error: no archive could be put in place (see the lines above)", err=True)
    sys.exit(0 if all(placed) else 1 if any(placed) else 2)

