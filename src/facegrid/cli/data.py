"""``facegrid data``: check, pack, show and count a dataset, and serve it to trainers on other hosts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import click

from facegrid.cli.app import (
    Number,
    fatal_input_errors,
    import_tensorflow,
    main,
    notice,
    printable,
    settings,
    verbose,
)
from facegrid.core.config import POLICIES, Config, service_address
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import FaceFilter


def _face_filter_options(command):
    options = [
        click.option("--keep-invalid", is_flag=True, help="Keep faces flagged invalid."),
        click.option(
            "--min-size",
            type=Number(),
            default=0.0,
            show_default=True,
            help="Drop faces whose shorter side is below this (original pixels).",
        ),
        click.option(
            "--max-blur",
            type=click.IntRange(0, 2),
            default=None,
            help="Drop faces blurrier than this (0 clear, 1 normal, 2 heavy).",
        ),
        click.option(
            "--max-occlusion",
            type=click.IntRange(0, 2),
            default=None,
            help="Drop faces more occluded than this (0 none, 1 partial, 2 heavy).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _face_filter(keep_invalid, min_size, max_blur, max_occlusion) -> FaceFilter:
    return FaceFilter(drop_invalid=not keep_invalid, min_size=min_size, max_blur=max_blur, max_occlusion=max_occlusion)


@main.group()
def data() -> None:
    """Inspect a WIDER-FACE-format dataset (check, show, stats), pack it into shards, serve it to trainers."""


@data.command()
@click.option(
    "--dispatcher",
    "dispatcher_port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Run TensorFlow's tf.data service dispatcher on PORT (0: any free port).",
)
@click.option(
    "--worker",
    "dispatcher_address",
    metavar="HOST:PORT",
    help="Run a tf.data service worker for the dispatcher at HOST:PORT.",
)
@click.option("--port", type=click.IntRange(0, 65535), help="Worker: its own port (0: any free port)  [default: 0].")
@click.option(
    "--host",
    metavar="NAME",
    help="Worker: the name or address trainers on other machines reach this one by, which it gives the "
    "dispatcher  [default: localhost, for trainers on this machine].",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dispatcher: keep its state here, so that a restarted dispatcher resumes its jobs; one dispatcher at a time.",
)
@click.option(
    "--wait",
    type=Number(0, min_open=True),
    metavar="SECONDS",
    help="Worker: how long to wait for the dispatcher to answer before giving up "
    f"[default: {Config.data_service_wait:g}].",
)
@fatal_input_errors
def serve(dispatcher_port, dispatcher_address, port, host, work_dir, wait) -> None:
    """Serve input work to trainers on other hosts: a tf.data service dispatcher or worker.

    \b
    Start one dispatcher, then workers on any hosts that reach it:
      facegrid data serve --dispatcher 5050
      facegrid data serve --worker dispatcher-host:5050 --host this-host
    and train with --data-service dispatcher-host:5050. Runs until
    interrupted (Ctrl-C or SIGTERM), then says 'stopped' and exits with 0.
    A port another server holds is refused (exit status 2).
    """
    _check_serve_options(dispatcher_port, dispatcher_address, port, host, work_dir, wait)
    server = None
    with _stopped_by_signals():
        try:
            _preflight(dispatcher_port, dispatcher_address, port, work_dir, wait)
            import_tensorflow()
            server = _start_server(dispatcher_port, dispatcher_address, port, host, work_dir, wait)
            click.echo(_serving(server, dispatcher_address, host), err=True)
            while True:
                # in slices: a signal may reach one of TensorFlow's threads, and a sleep wakes early only for a
                # signal of its own thread; Python runs the handler once this thread is back (join() never is)
                time.sleep(0.5)
        except KeyboardInterrupt:
            if server is not None:
                from facegrid.scale import service

                if not service.stop(server):
                    click.echo(f"stopped (the server's own stop was cut short after {service.STOP_WAIT:g} s)", err=True)
                    sys.stderr.flush()
                    os._exit(0)  # what is left of TensorFlow's stop would otherwise run again, and wait, at exit
            click.echo("stopped", err=True)


def _serving(server, dispatcher_address, host) -> str:
    """The line saying a server runs, said once it is held, so a signal right after it finds it stopped."""
    if dispatcher_address is None:
        return f"tf.data service dispatcher at {server.target}"
    return f"tf.data service worker for {dispatcher_address}, reached at {host or 'localhost'}"


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


def _check_serve_options(dispatcher_port, dispatcher_address, port, host, work_dir, wait) -> None:
    """Refuse a ``data serve`` that names no role or both, an option of the other role, or a bad address."""
    if (dispatcher_port is None) == (dispatcher_address is None):
        raise click.UsageError("give exactly one of --dispatcher PORT and --worker HOST:PORT")
    for flag, value, of_dispatcher in (
        ("--port", port, False),
        ("--host", host, False),
        ("--wait", wait, False),
        ("--work-dir", work_dir, True),
    ):
        if value is not None and of_dispatcher != (dispatcher_port is not None):
            raise click.UsageError(f"{flag} goes with {'--dispatcher' if of_dispatcher else '--worker'} only")
    if dispatcher_address is not None:
        try:
            service_address(dispatcher_address)
        except ValueError as error:
            raise click.UsageError(f"--worker: {error}") from None


def _preflight(dispatcher_port, dispatcher_address, port, work_dir, wait) -> None:
    """Refuse, before TensorFlow loads (seconds), a server that could not start: its port or state folder held,
    or its dispatcher silent (the server's start asks again)."""
    from facegrid.scale import preflight

    if dispatcher_port is not None:
        preflight.check_port_free(dispatcher_port)
        if work_dir is not None:
            preflight.lock_state_folder(str(work_dir)).close()
    else:
        preflight.wait_for_dispatcher(dispatcher_address, wait or Config.data_service_wait, notice)
        preflight.check_port_free(port or 0)


def _start_server(dispatcher_port, dispatcher_address, port, host, work_dir, wait):
    """The dispatcher or worker ``data serve`` asks for, started."""
    from facegrid.scale import service

    if dispatcher_port is not None:
        return service.start_dispatcher(dispatcher_port, None if work_dir is None else str(work_dir))
    return service.start_worker(
        dispatcher_address,
        port or 0,
        host=host or "localhost",
        wait=wait or Config.data_service_wait,
        notice=notice,
    )


@data.command()
@click.argument("annotations", type=click.Path(path_type=Path))
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the annotation paths are relative to; every image is opened.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Threads decoding images [default: CPUs].")
@fatal_input_errors
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
        import_tensorflow()
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
            click.echo(
                f"none of the images is in {images}"
                + (
                    f"; they are in {report.nearby_images}: pass --images {report.nearby_images}"
                    if report.nearby_images
                    else ": is it the folder the annotation paths are relative to?"
                )
            )
    sys.exit(0 if report.ok else 1)


@data.command()
@click.argument("annotations", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--images",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the annotation paths are relative to.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the shards and manifest.json.",
)
@click.option("--shards", type=click.IntRange(1), help="Number of shards  [default: enough for 100-200 MB each].")
@click.option("--name", default="widerface", show_default=True, help="Dataset name, the shard names' first part.")
@click.option("--split", help="Split name  [default: train, val or test as ANNOTATIONS' name says, else train].")
@click.option("--workers", type=click.IntRange(1), default=None, help="Threads reading images [default: CPUs].")
@click.option(
    "--on-bad-image",
    type=click.Choice(POLICIES),
    default=Config.on_bad_image,
    show_default=True,
    help="An unusable image stops the pack (exit status 2), or is left out, reported and "
    "listed in the manifest (exit status 1).",
)
@click.option("--overwrite", is_flag=True, help="Replace the packed set in a folder that is not empty.")
@fatal_input_errors
def pack(annotations, images, out, shards, name, split, workers, on_bad_image, overwrite) -> None:
    """Pack ANNOTATIONS and its images into TFRecord shards and a manifest.json in --out.

    Each image is one tf.train.Example (see facegrid.data.tf.records): the file's
    bytes as stored, its upright size, EXIF orientation, path, and every
    face's box and attributes. Shards are written under temporary names and
    renamed once all are complete; the same input gives the same bytes.
    """
    index = read_annotations(annotations)
    import_tensorflow()
    from facegrid.data.tf.pack import pack_dataset

    start = time.perf_counter()
    try:
        manifest = pack_dataset(
            index,
            images,
            out,
            shards=shards,
            name=name,
            split=split,
            workers=workers,
            on_bad_image=on_bad_image,
            overwrite=overwrite,
            progress=verbose() or sys.stderr.isatty(),
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    seconds = time.perf_counter() - start
    for entry in manifest.skipped:
        click.echo("skipped " + printable(f"{images / entry['image']}: {entry['reason']}"), err=True)
    click.echo(
        f"packed {manifest.images:,} images, {manifest.faces:,} faces into {len(manifest.shards)} shard(s) "
        f"in {out}: {manifest.bytes / 1e6:,.1f} MB, {manifest.images / seconds:,.0f} images/s"
        + (f"; {manifest.skipped_images:,} skipped" if manifest.skipped else "")
    )
    sys.exit(1 if manifest.skipped else 0)


@data.command()
@click.argument("annotations", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the annotation paths are relative to (required with ANNOTATIONS).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("facegrid-show"),
    show_default=True,
    help="Folder for the PNGs.",
)
@click.option("--count", type=click.IntRange(1), default=8, show_default=True, help="Images to show.")
@click.option(
    "--input-size", type=click.IntRange(32), help=f"Side of the square input  [default: {Config.input_size}]."
)
@click.option("--grid-size", type=click.IntRange(1), help=f"Side of a single grid  [default: {Config.grid_size}].")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Take the input size, target layout and crops of these detector settings (TOML), "
    "e.g. src/facegrid/models/facegrid-wider.toml for the bundled model's pyramid.",
)
@click.option("--augment", is_flag=True, help="Show the training augmentation instead of the plain input.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the augmentation.")
@click.option("--overwrite", is_flag=True, help="Replace PNGs of an earlier run in --out.")
@_face_filter_options
@fatal_input_errors
def show(
    annotations, images, out, count, input_size, grid_size, config_path, augment, seed, overwrite, **filter_args
) -> None:
    """Draw images with their boxes next to the network input and its decoded target.

    Without ANNOTATIONS, shows facegrid's bundled sample dataset. Green boxes
    are training targets, red ones faces the filter leaves out; on the right,
    the grid and the boxes decoded back from the target (yellow). A pyramid
    (--config with strides) is drawn level by level: positive cells filled,
    ignore cells grey.
    """
    from facegrid.core.codec import GridCodec
    from facegrid.data.augment import augmentation
    from facegrid.data.examples import ExampleBuilder
    from facegrid.data.show import show_dataset

    if annotations is None:
        from facegrid.core.resources import sample_dataset

        annotations, images = sample_dataset()
        click.echo(f"showing the bundled sample dataset ({annotations})")
    elif images is None:
        raise click.UsageError("--images is required with ANNOTATIONS")
    if config_path is not None:
        if input_size is not None or grid_size is not None:
            raise click.UsageError("--config sets the input size and layout: leave out --input-size and --grid-size")
        config = settings(config_path)
        builder = ExampleBuilder(config.input_size, config.codec, augmentation(config) if augment else None)
    else:
        builder = ExampleBuilder(
            input_size or Config.input_size,
            GridCodec(grid_size or Config.grid_size),
            augmentation(Config()) if augment else None,
        )
    written, failed = show_dataset(
        read_annotations(annotations),
        images,
        out,
        count=count,
        builder=builder,
        face_filter=_face_filter(**filter_args),
        seed=seed,
        overwrite=overwrite,
    )
    for path in written:
        click.echo(f"wrote {path}")
    for error in failed:
        click.echo(f"skipped {error}", err=True)
    sys.exit(1 if failed else 0)


@data.command()
@click.argument("annotations", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Image folder, to read image sizes (else estimated from the boxes).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save a plot (PNG).")
@click.option("--input-size", type=click.IntRange(32), default=Config.input_size, show_default=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Detector settings (TOML) whose pyramid's share to report too (default: the bundled model's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--overwrite", is_flag=True, help="Replace the --out plot if it exists.")
@_face_filter_options
@fatal_input_errors
def stats(annotations, images, out, input_size, config_path, as_json, overwrite, **filter_args) -> None:
    """Faces per image, face sizes, and the share of faces each target layout can represent.

    Shares are given for 7x7, 14x14 and 28x28 grids over the square
    input, and for the pyramid of the detector settings (the bundled model's
    unless --config), at their detection size.
    """
    from facegrid.core.figures import check_figure_path
    from facegrid.core.resources import bundled_model_path
    from facegrid.data.stats import dataset_stats, plot_stats

    config = settings(config_path or bundled_model_path().with_suffix(".toml"))
    pyramid = (config.codec, config.detection_input_size) if config.strides else None
    index = read_annotations(annotations)
    if out is not None:
        read = [annotations] + ([images / name for name in index.paths.tolist()] if images else [])
        check_figure_path(out, read, overwrite)
    result = dataset_stats(
        index, images, face_filter=_face_filter(**filter_args), input_size=input_size, pyramid=pyramid
    )
    if out is not None:
        plot_stats(result, out, title=f"{annotations.name}: {result.images:,} images, {result.faces:,} faces")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    summary = result.to_dict()
    per_image = summary["faces_per_image"]
    click.echo(
        f"{annotations}: {result.images:,} images, {result.face_rows:,} face rows, "
        f"{result.faces:,} faces after filtering"
    )
    click.echo(
        f"faces per image: mean {per_image['mean']:.1f}, median {per_image['median']:.0f}, "
        f"max {per_image['max']}, {per_image['without_faces']:,} images without faces"
    )
    click.echo(
        "face size sqrt(w*h), original pixels: "
        + ", ".join(f"{k} {v}" for k, v in summary["face_size_px_percentiles"].items())
    )
    click.echo(f"\nface size in pixels of the {input_size}px input:")
    click.echo(f"  {'pixels':>10}  {'faces':>9}  {'share':>6}")
    for label, count, share in result.size_table():
        click.echo(f"  {label:>10}  {count:>9,}  {share:>6.1%}")
    click.echo("\nfaces with a cell of their own (grids: one face per cell, over the square input):")
    click.echo(f"  {'layout':>22}  {'share':>6}")
    for layout, share in result.representable.items():
        click.echo(f"  {layout:>22}  {share:>6.1%}")
    if result.sizes_estimated:
        click.echo(
            f"\n{result.sizes_estimated:,} of {result.images:,} image sizes were estimated from the "
            "extent of their boxes, a lower bound: shares and input-pixel sizes above run a few points "
            "high" + ("" if images else " (pass --images to read the sizes)")
        )
    if out is not None:
        click.echo(f"wrote {out}")
