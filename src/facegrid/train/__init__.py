"""A training run: its folder, checkpoints, exact resume, validation each epoch, curves and panels.

Owns :func:`~.run.train` (:mod:`.run`), what a run folder holds and may
be reused for (:mod:`.folder`), and its curves (:mod:`.curves`).

May import: every part below it (:mod:`facegrid.core` up to
:mod:`facegrid.eval` and :mod:`facegrid.scale`); not the command line.
"""
