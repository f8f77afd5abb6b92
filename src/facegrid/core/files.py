"""Writing files safely: never over an input, never over a file unless asked, never half a file.

Every command that writes checks all it will write before it starts any work
(:func:`check_outputs`):

* an output that is one of the command's inputs (the same file, by any path
  or link) is refused, whatever is asked: detecting ``photos/a.jpg`` into
  ``--out photos`` would otherwise replace the photo with its annotated copy;
  so is an output folder, whose content the command replaces, that is or
  holds an input;
* an output that exists is refused unless ``overwrite`` is given.

Files are then written under a temporary name beside their place and renamed
into it (:func:`write_atomically`), so a reader, or a run killed midway,
sees the previous complete file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from facegrid.core.errors import OutputExistsError, OverwritesInputError, PathError


def _identity(path: Path) -> tuple[int, int] | str:
    """What tells two paths of one file apart from two files: device and inode where it exists, else the real path."""
    try:
        stat = path.stat()
    except ValueError:  # a NUL in the name: no file has it
        return str(path)
    except OSError:
        return os.path.realpath(path)
    return (stat.st_dev, stat.st_ino)


def check_outputs(
    outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike], overwrite: bool = False
) -> None:
    """Refuse outputs that would replace an input, or, unless ``overwrite``, an existing file.

    Args:
        outputs: every file the command will write, and every folder whose
            content it replaces.
        inputs: every file it reads, and every folder it reads the files of
            (folders it only looks into, such as those of a command's
            arguments, are not inputs: the files read from them are).
        overwrite: existing outputs (other than inputs) may be replaced.

    Raises:
        facegrid.core.errors.OverwritesInputError: an output is one of ``inputs``,
            or is a folder holding one.
        facegrid.core.errors.OutputExistsError: an output exists and not ``overwrite``.
    """
    inputs = [Path(path) for path in inputs if path]
    read = {}
    for path in inputs:
        read.setdefault(_identity(path), path)
    for out in map(Path, outputs):
        source = read.get(_identity(out))
        if source is not None:
            raise _overwrites(out, "is", source)
        held = next((path for path in inputs if _holds(out, path)), None) if out.is_dir() else None
        if held is not None:
            raise _overwrites(out, "holds", held)
        if not overwrite and (out.exists() or out.is_symlink()):
            raise OutputExistsError(out, "exists")


def _holds(folder: Path, path: Path) -> bool:
    """Whether ``path`` lies inside ``folder``, links followed."""
    try:
        root = os.path.realpath(folder)
        return os.path.commonpath([os.path.realpath(path), root]) == root
    except ValueError:  # a NUL in a name: no file has it
        return False


def _overwrites(out: Path, relation: str, source: Path) -> OverwritesInputError:
    """The refusal of ``out``, which ``relation`` ("is", "holds") the input ``source``."""
    if relation == "holds":
        return OverwritesInputError(
            out,
            f"holds an input ({source}): an output written there could destroy it; choose another place for the output",
        )
    named = "" if os.path.abspath(out) == os.path.abspath(source) else f" ({source})"
    return OverwritesInputError(
        out, f"an output would be written over this input{named}; choose another place for the output"
    )


def make_folder(folder: str | os.PathLike) -> None:
    """Make ``folder`` and its missing parents.

    Raises:
        facegrid.core.errors.PathError: it cannot be made (a file stands on the
            way, no permission), naming the folder that failed.
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PathError(error.filename or folder, f"cannot make the folder: {error.strerror or error}") from None


@contextlib.contextmanager
def staged(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write; flushed and renamed to ``path`` when the block ends.

    If the block raises (or a generator holding it is closed early), the
    temporary file is removed and ``path`` is untouched; a reader sees the
    previous complete file or the new one, never a part.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write`` with a temporary path beside ``path``, then put the file in place (see :func:`staged`)."""
    with staged(path) as tmp:
        write(tmp)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`write_atomically`."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, as 64 lowercase hex digits.

    Raises:
        facegrid.core.errors.PathError: the file cannot be read.
    """
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise PathError(path, f"cannot read: {error.strerror or error}") from None
