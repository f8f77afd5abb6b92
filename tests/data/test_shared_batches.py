"""SharedBatch: pickles as a shared-memory name, unpickles to equal plain arrays, leaves no block behind."""

from __future__ import annotations

import pickle
from multiprocessing import shared_memory

import numpy as np
import pytest

from facegrid.data.shared_batches import AVAILABLE, SharedBatch, receive

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="shared-memory hand-over is POSIX only")


def test_pickle_carries_a_name_and_unpickles_to_the_same_arrays(shm_blocks):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    y = rng.normal(size=(16, 7, 7, 5)).astype(np.float32)
    empty = np.zeros((0, 4), np.float32)
    before = shm_blocks()
    data = pickle.dumps(SharedBatch((x, y[:, ::2], empty)))  # a strided view goes too
    assert len(data) < 1000  # the pixels are not in the pickle
    got = pickle.loads(data)
    assert type(got) is tuple and len(got) == 3
    for sent, back in zip((x, y[:, ::2], empty), got):
        assert back.dtype == sent.dtype and back.flags.owndata
        np.testing.assert_array_equal(back, sent)
    assert shm_blocks() == before


def test_receiving_frees_the_block():
    _, (name, layout) = SharedBatch((np.arange(10),)).__reduce__()
    shared_memory.SharedMemory(name=name).close()  # there until received
    (back,) = receive(name, layout)
    np.testing.assert_array_equal(back, np.arange(10))
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)
