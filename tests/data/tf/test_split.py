"""Even parts: a batch shared between replicas, and a stream served in a given number of steps, by one rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")
from facegrid.data.tf.split import even_batches, even_parts  # noqa: E402


def _stream(count: int) -> tf.data.Dataset:
    """``count`` elements ``(images, targets)``: image i is all i, its target -i."""
    return tf.data.Dataset.range(count).map(lambda i: (tf.fill([2, 2], i), -i))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60).flatmap(lambda count: st.tuples(st.just(count), st.integers(1, count))))
def test_a_stream_served_in_parts_keeps_every_element_in_order_in_the_parts_of_one_batch(shape):
    count, parts = shape
    served = [(images.numpy(), targets.numpy()) for images, targets in even_batches(_stream(count), count, parts)]
    assert len(served) == parts
    images = np.concatenate([batch for batch, _ in served])
    np.testing.assert_array_equal(images[:, 0, 0], np.arange(count))
    np.testing.assert_array_equal(np.concatenate([targets for _, targets in served]), -np.arange(count))
    # the same cut as one batch of them all shared between as many replicas
    whole = next(iter(_stream(count).batch(count)))
    shared = [images.numpy() for images, _ in even_parts(*whole, parts)]
    assert [len(part) for part in shared] == [len(batch) for batch, _ in served]
    assert max(map(len, shared)) - min(map(len, shared)) <= 1


def test_more_parts_than_elements_are_refused():
    with pytest.raises(ValueError, match="parts must be 1 to the 3 elements, got 4"):
        even_batches(_stream(3), 3, 4)
    with pytest.raises(ValueError, match="parts must be 1 to the 3 elements, got 0"):
        even_batches(_stream(3), 3, 0)
