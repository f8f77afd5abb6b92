"""The ``facegrid`` command group and what every command shares: one error line, quiet TensorFlow, progress.

Exit status of every command: 0 success, 1 problems found in the data,
2 the input cannot be used at all, or would give nothing (one line on
stderr, naming the file, ``FILE:LINE`` or image where there is one; never a
traceback). facegrid's own errors (:mod:`facegrid.core.errors`) become that
line here, the one place that speaks of flags.

TensorFlow loads only in the commands that need it, after their arguments
are checked; without ``-v`` its start-up lines stay off the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time

import click

from facegrid.core.errors import (
    AnnotationError,
    FacegridError,
    OutputExistsError,
    RunInUseError,
    SubmissionError,
)


class Number(click.FloatRange):
    """A float option in a range, refusing ``nan`` and infinities, which a range alone lets through."""

    name = "number"

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()  # not "x<=None"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def printable(text: str) -> str:
    """``text`` with line breaks, other control characters and undecodable bytes of names escaped: one line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _message(error: FacegridError) -> str:
    """What the command line says of one of facegrid's errors: the error, and the flag that would help."""
    if isinstance(error, AnnotationError):
        return f"not a readable WIDER annotation file: {error}"
    if isinstance(error, SubmissionError):
        return f"not a readable WIDER result file: {error}"
    if isinstance(error, OutputExistsError):
        return f"{error}: pass --overwrite to replace it"
    if isinstance(error, RunInUseError):
        again = "continue it" if error.finished else "start it again with its settings"
        return f"{error}: pass --resume to {again}, or choose another folder"
    return str(error)


def fatal_input_errors(command):
    """Turn unusable input into exit status 2 and a one-line message."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
            sys.exit(1)
        except FacegridError as error:
            message = _message(error)
        except OSError as error:
            message = ("" if error.filename is None else f"{error.filename}: ") + (error.strerror or str(error))
        click.echo(f"error: {printable(message)}", err=True)
        sys.exit(2)

    return wrapper


def settings(path, **overrides):
    """The settings of ``path`` (the defaults if None) with ``overrides``; flags at fault are a usage mistake."""
    from facegrid.core.config import load_config

    try:
        return load_config(path, **overrides)
    except ValueError as error:  # the flags alone are at fault
        raise click.UsageError(str(error)) from None


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
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)  # a training run logs INFO to train.log
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


def verbose() -> bool:
    """Whether ``-v`` was given."""
    return click.get_current_context().find_root().params["verbose"]


def import_tensorflow() -> None:
    """Import TensorFlow; without -v, what its libraries write to stderr while they load is discarded.

    Those lines (absl's notice that logging is not initialised yet, oneDNN's
    notice) are written before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so only
    pointing stderr's file descriptor elsewhere for the import keeps them off
    the terminal. Python's own errors are raised after it is restored.
    """
    if "tensorflow" in sys.modules:
        return
    try:
        with quiet_stderr():
            import tensorflow  # noqa: F401
    except ImportError:
        missing = click.ClickException(
            "this needs TensorFlow, which is not installed: pip install 'facegrid[train]' "
            "(exported .tflite and .onnx models run without it)"
        )
        missing.exit_code = 2
        raise missing from None


@contextlib.contextmanager
def quiet_stderr():
    """Without -v, discard what native libraries write straight to stderr's file descriptor meanwhile."""
    if verbose():
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


def notice(line: str) -> None:
    """Say a line the user must see (what a command waits for), with or without -v."""
    click.echo(printable(line), err=True)


def load_detector(model_path, **detector_settings):
    """The detector of ``model_path`` (the default model if None); TensorFlow loads only for a Keras model."""
    from facegrid.core.resources import default_model_path
    from facegrid.infer.detector import Detector
    from facegrid.infer.runtimes import is_exported

    if not is_exported(model_path or default_model_path()):
        import_tensorflow()
    try:
        with quiet_stderr():  # LiteRT's native notice that XNNPACK is on
            return Detector.load(model_path, **detector_settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


class Progress:
    """A progress bar with an ETA on stderr (on a terminal, or with -v), then a one-line summary there.

    Results go to stdout through :meth:`echo`, which keeps them clear of the
    bar; stdout stays the results' alone, so ``--json`` output pipes cleanly.
    """

    def __init__(self, total: int | None, unit: str, boxes: str = "face(s)"):
        from tqdm import tqdm

        shown = verbose() or sys.stderr.isatty()
        self.bar = tqdm(
            total=total, unit=f" {unit}", disable=not shown, file=sys.stderr, leave=False, dynamic_ncols=True
        )
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
        click.echo(
            f"{' and '.join(parts)}: {self.boxes:,} {self.boxes_name} in {seconds:.1f} s, {rate:,.1f} {unit}/s",
            err=True,
        )
