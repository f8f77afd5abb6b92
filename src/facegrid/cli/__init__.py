"""The ``facegrid`` command: a thin layer over the library, one module per command group.

:mod:`.app` holds the group, the error line every command ends in and what
the commands share; :mod:`.data`, :mod:`.train`, :mod:`.detect`,
:mod:`.export` and :mod:`.download` add their commands to it. Each parses
its flags, makes the library calls, and prints.
"""

from facegrid.cli import data, detect, download, export, train  # noqa: F401 (each adds its commands to main)
from facegrid.cli.app import main

__all__ = ["main"]
