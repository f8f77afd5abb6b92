"""Error types shared across modules, free of heavy imports so that any command can catch them.

Every error facegrid raises on purpose derives from :class:`FacegridError`,
and its message is one line that names the place (a file, ``FILE:LINE``, an
image, an address). Exceptions of other libraries (TensorFlow, Keras,
OpenCV, the network) are turned into these where facegrid calls them, so
that a caller catches one family and never tells kinds apart by wording.
Library messages speak of arguments (``overwrite=True``); the command line
alone speaks of its flags.
"""

from __future__ import annotations

import os
import re

#: What TensorFlow writes into its messages about its own graph: ``{{node X}}``, ``[[...]]``, ``[Op:X] name: ``.
_TF_INTERNALS = re.compile(r"\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]( name:( \S*)?)?")


def reason_of(error: BaseException) -> str:
    """Another library's exception in one line, for the message of the error facegrid raises in its place.

    TensorFlow's messages from a running graph say where the graph was
    built before the failed op's own line, which comes just before
    ``[[{{node ...}}]]``: that line is taken, else the first, without the
    names of TensorFlow's internal ops; the exception's type where the
    message says nothing.
    """
    lines = [line.strip() for line in (getattr(error, "message", None) or str(error)).splitlines() if line.strip()]
    op = next((k for k, line in enumerate(lines) if line.startswith("[[")), 1)
    for line in lines[max(op - 1, 0) :]:
        line = " ".join(_TF_INTERNALS.sub(" ", line).split())
        if line:
            return line
    return type(error).__name__


class FacegridError(Exception):
    """Base of every error facegrid raises on purpose; its message is one line naming the place."""


class FileLineError(FacegridError):
    """A text file is not in the format expected, at a known line.

    The message reads ``FILE:LINE: reason``, the form editors and terminals
    turn into a link to the place.

    Attributes:
        path: the file.
        line: 1-based line number of the problem.
        reason: what was expected there and what was found.
    """

    def __init__(self, path: str | os.PathLike, line: int, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason}")

    def __reduce__(self):  # arrives whole from a worker process
        return type(self), (self.path, self.line, self.reason)


class PathError(FacegridError):
    """A file cannot be used, for a reason that concerns the whole file.

    The message reads ``PATH: reason``.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # arrives whole from a worker process
        return type(self), (self.path, self.reason)


class RunInUseError(PathError):
    """A new training run was asked for in a folder that holds a run; resuming it (``resume=True``) was not.

    Attributes:
        files: the run's files found there.
        finished: whether the run finished an epoch (else resuming starts
            it again with its settings).
    """

    def __init__(self, path: str | os.PathLike, files: list[str], finished: bool):
        self.files, self.finished = list(files), finished
        what = "a run already" if finished else "a run stopped before its first epoch ended"
        super().__init__(path, f"holds {what} ({', '.join(self.files)})")

    def __reduce__(self):
        return type(self), (self.path, self.files, self.finished)


class SettingsError(PathError):
    """A settings file (TOML of :class:`facegrid.core.config.Config`) cannot be used: unreadable, not TOML, unsound."""


class ModelFileError(PathError):
    """A model file cannot be loaded: missing, not a Keras model, or carrying code."""


class OutputExistsError(PathError):
    """An output would replace a file that exists, and replacing was not asked for (``overwrite=True``)."""


class OverwritesInputError(PathError):
    """An output would be written over one of the command's own inputs, which nothing may do."""


class ServiceError(FacegridError):
    """A server facegrid waited for did not answer in time, a port it needs is taken, or reading from it failed.

    Attributes:
        address: ``host:port``, or ``port N`` for a port of this host.
        reason: what was waited for and for how long, or what went wrong.
    """

    def __init__(self, address: str, reason: str):
        self.address = str(address)
        self.reason = reason
        super().__init__(f"{self.address}: {reason}")

    def __reduce__(self):
        return type(self), (self.address, self.reason)


class TrainingError(FacegridError):
    """Training stopped on an error TensorFlow raised (out of memory, a failed read): one line, the run named.

    Attributes:
        run: the run folder.
        reason: what TensorFlow said, in one line.
    """

    def __init__(self, run: str | os.PathLike, reason: str):
        self.run = str(run)
        self.reason = reason
        super().__init__(f"{self.run}: training stopped: {reason}")

    def __reduce__(self):
        return type(self), (self.run, self.reason)


class AnnotationError(FileLineError):
    """An annotation file is not valid WIDER FACE format. See :class:`FileLineError`."""


class SubmissionError(FileLineError):
    """A result file is not in the WIDER FACE result format. See :class:`FileLineError`."""


class ImageError(PathError):
    """An image cannot be read: missing, empty, truncated, not an image, or refused.

    Subclasses tell the kinds a caller treats apart (a report that counts
    missing images on their own, say) by type, never by wording.

    Attributes:
        path: the image file.
        reason: what went wrong.
    """


class MissingImageError(ImageError):
    """The image file does not exist."""


class RefusedPathError(ImageError):
    """A path read from a file would lead outside its folder (see :mod:`facegrid.core.paths`); it is never opened."""


class VideoError(PathError):
    """A video cannot be read (or its annotated copy written) with OpenCV. See :class:`PathError`."""


class DamagedShardError(PathError):
    """A shard's record cannot be read: its length or checksum fails, or the file ends inside it.

    Attributes:
        path: the shard.
        examples: the examples read intact before the damaged record.
        cause: TensorFlow's reason, one line.
    """

    def __init__(self, path: str | os.PathLike, examples: int, cause: str):
        self.examples, self.cause = examples, cause
        super().__init__(path, f"damaged after {examples:,} example(s): {cause}")

    def __reduce__(self):  # arrives whole from a worker process
        return type(self), (self.path, self.examples, self.cause)


class ExportError(PathError):
    """A model could not be converted; the reason is the converter's own, in one line."""


class FetchError(FacegridError):
    """No address gave a good copy (each address's failure was reported as it happened)."""
