"""Batches handed from worker processes to the trainer through shared memory.

A worker process's result reaches its parent pickled through a pipe, which
the parent reads in 64 KB pieces while holding the GIL the trainer needs: for
a 2.4 MB batch of 16 images that costs the trainer's process milliseconds a
batch. A :class:`SharedBatch` pickles instead as the name of a shared-memory
block holding its arrays; unpickling copies them out and frees the block, so
the receiving side gets a plain tuple of arrays and never sees the block.

POSIX only: on Windows a block vanishes once its maker lets go of it, before
the parent could read it (:data:`AVAILABLE`).
"""

from __future__ import annotations

import os
from multiprocessing import resource_tracker, shared_memory

import numpy as np

AVAILABLE = os.name == "posix"


def prepare_parent() -> None:
    """Start the resource tracker before workers are created, so that every
    process shares it: blocks a crashed worker leaves behind are then freed
    when the program ends, and a block made by one process and freed by
    another is not reported as leaked."""
    resource_tracker.ensure_running()


class SharedBatch(tuple):
    """A tuple of arrays that travels through shared memory when pickled.

    Only for handing a batch to another process on the same machine, once: the
    pickle names a block that its first unpickling frees.
    """

    def __reduce__(self):
        arrays = [np.asarray(a) for a in self]
        layout, offset = [], 0
        for a in arrays:
            layout.append((a.shape, a.dtype.str, offset))
            offset += a.nbytes
        block = shared_memory.SharedMemory(create=True, size=max(offset, 1))
        try:
            for a, (shape, dtype, start) in zip(arrays, layout):
                np.ndarray(shape, dtype, buffer=block.buf, offset=start)[...] = a
        except BaseException:
            block.close()
            block.unlink()
            raise
        block.close()
        return receive, (block.name, tuple(layout))


def receive(name: str, layout: tuple) -> tuple[np.ndarray, ...]:
    """The arrays of the block ``name``, copied out; the block is freed."""
    block = shared_memory.SharedMemory(name=name)
    try:
        return tuple(np.ndarray(shape, dtype, buffer=block.buf, offset=start).copy() for shape, dtype, start in layout)
    finally:
        block.close()
        block.unlink()
