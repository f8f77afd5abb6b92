"""Error types shared across modules, free of heavy imports so that any command can catch them."""

from __future__ import annotations

import os


class FileLineError(ValueError):
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


class PathError(ValueError):
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


class ModelFileError(PathError):
    """A model file cannot be loaded: missing, not a Keras model, or carrying code."""
