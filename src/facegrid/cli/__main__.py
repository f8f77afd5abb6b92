"""``python -m facegrid.cli``: the ``facegrid`` command."""

from facegrid.cli import main

main()
