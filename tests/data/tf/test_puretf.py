"""The pure-TensorFlow pipeline (``facegrid.data.tf.puretf``): FaceSequence's batches with no Python per example."""

from __future__ import annotations

import numpy as np
import pytest
from test_pipeline import assert_same_batches, batches

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.config import Config
from facegrid.core.errors import PathError
from facegrid.data.augment import Augment, augmentation
from facegrid.data.sequence import FaceSequence
from facegrid.data.tf.pipeline import FacePipeline
from facegrid.data.tf.puretf import PureTFPipeline
from facegrid.scale.service import op_types
from facegrid.wider.annotations import read_annotations

tf = pytest.importorskip("tensorflow")

#: Ops that call back into Python: a tf.data service cannot run them on its workers.
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "NumpyFunction"}


@pytest.fixture(scope="module")
def val_sample(wider):
    return (
        read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"),
        wider / "WIDER_val" / "images",
    )


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_same_batches_as_face_sequence(val_sample, augment):
    index, images = val_sample
    pipeline = PureTFPipeline(index, images, batch_size=32, augment=augment, seed=3)
    sequence = FaceSequence(index, images, batch_size=32, augment=augment, seed=3)
    sequence.epoch = 2
    ours = batches(pipeline.dataset(first_epoch=2, epochs=1))
    assert len(pipeline) == len(sequence) == 13
    assert [len(x) for x, _ in ours] == [32] * 12 + [10]  # the last batch holds the remainder
    assert_same_batches(ours, sequence)


def test_small_crops_file_order_and_another_grid(val_sample):
    index, images = val_sample
    settings = dict(input_size=160, codec=GridCodec(20), shuffle=False, augment=Augment(crop_scale=(0.3, 1.0)), seed=4)
    ours = batches(PureTFPipeline(index.take(np.arange(50)), images, batch_size=16, **settings).dataset())
    assert_same_batches(ours, FaceSequence(index.take(np.arange(50)), images, batch_size=16, **settings))
    assert sum(int((y[..., 0] == -1).sum()) for _, y in ours) > 0  # ignore cells are exercised


def test_same_pyramid_batches_as_face_sequence(val_sample):
    index, images = val_sample
    config = Config(strides=(8, 16, 32), grid_size=0, input_size=128, crop_scale=(0.3, 1.0))
    settings = dict(input_size=config.input_size, codec=config.codec, augment=augmentation(config), seed=5)
    pipeline = PureTFPipeline(index.take(np.arange(48)), images, batch_size=16, **settings)
    sequence = FaceSequence(index.take(np.arange(48)), images, batch_size=16, **settings)
    sequence.epoch = 1
    ours = batches(pipeline.dataset(first_epoch=1, epochs=1))
    assert ours[0][1].shape == (16, 16 * 16 + 8 * 8 + 4 * 4, 5)
    assert_same_batches(ours, sequence)
    assert sum(int((y[..., 0] == 1).sum()) for _, y in ours) > 200  # several cells per face


def test_epochs_follow_each_other_in_the_sources_orders(val_sample):
    index, images = val_sample
    pipeline = PureTFPipeline(index, images, batch_size=100, seed=1)
    two = batches(pipeline.dataset(first_epoch=4, epochs=2))
    assert len(two) == 2 * len(pipeline) == 8
    orders = [plan["image"] for plan in pipeline.plans(4, 2).as_numpy_iterator()]
    for epoch, order in zip((4, 5), orders):
        np.testing.assert_array_equal(order, pipeline.source.order(epoch))
        assert sorted(order) == list(range(len(index)))
    for epoch, part in zip((4, 5), (two[:4], two[4:])):
        sequence = FaceSequence(index, images, batch_size=100, seed=1)
        sequence.epoch = epoch
        for (_, y), (_, expected) in zip(part, (sequence[k] for k in range(4)), strict=True):
            np.testing.assert_array_equal(y, expected)
    assert not np.array_equal(two[0][1], two[4][1])  # a new order


def test_shards_together_serve_every_batch_and_image_once(val_sample):
    index, images = val_sample
    subset = index.take(np.arange(60))
    pipeline = PureTFPipeline(subset, images, batch_size=7, input_size=96, augment=True, seed=2)
    whole = batches(pipeline.dataset(epochs=2))
    shards = [batches(pipeline.dataset(epochs=2).shard(3, k)) for k in range(3)]
    assert sum(len(s) for s in shards) == len(whole) == 2 * len(pipeline)
    for k, (x, y) in enumerate(whole):
        shard_x, shard_y = shards[k % 3][k // 3]
        np.testing.assert_array_equal(shard_x, x)
        np.testing.assert_array_equal(shard_y, y)
    for epoch in range(2):
        served = [
            int(sample["image"])
            for k in range(3)
            for sample in pipeline.plans(epoch, 1).unbatch().shard(3, k).as_numpy_iterator()
        ]
        assert sorted(served) == list(range(len(subset)))


@pytest.mark.parametrize("codec", [GridCodec(7), PyramidCodec()], ids=["grid", "pyramid"])
def test_no_python_in_the_graph(val_sample, codec):
    index, images = val_sample
    subset = index.take(np.arange(10))
    types = op_types(PureTFPipeline(subset, images, batch_size=4, augment=True, codec=codec).dataset(epochs=2))
    assert {"ReadFile", "DecodeJpeg", "TensorScatterUpdate"} <= types  # the map bodies are inspected
    assert not types & PYTHON_OPS
    assert op_types(FacePipeline(subset, images, batch_size=4).dataset(epochs=1)) & PYTHON_OPS  # the check sees them


def test_refuses_what_it_cannot_do_in_tensorflow(samples, val_sample):
    index, images = val_sample
    with pytest.raises(PathError, match=r"2 image\(s\) are not JPEGs"):
        PureTFPipeline(samples / "faces_bbx_gt.txt", samples / "images")
    with pytest.raises(TypeError, match="PyramidCodec"):  # a level bound under 1e-6 square pixels
        PureTFPipeline(index.take(np.arange(4)), images, codec=PyramidCodec(faces_per_stride=1e-5))
