"""The tf.data pipeline (``facegrid.data.tf.pipeline``): FaceSequence's batches, decoded by TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.errors import ImageError
from facegrid.data.augment import Augment
from facegrid.data.sequence import FaceSequence
from facegrid.data.tf.pipeline import FacePipeline
from facegrid.wider.annotations import read_annotations

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def val_sample(wider):
    return (
        read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"),
        wider / "WIDER_val" / "images",
    )


def batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(dataset.as_numpy_iterator())


def assert_same_batches(ours, sequence):
    """Same images in the same order with the same targets; pixels equal up to rounding.

    Images shrunk 3x or more along a side (very wide or tall ones) are
    antialiased by different filters (area averaging in OpenCV, a triangle
    filter in TensorFlow): a few levels apart; all others a fraction of a level.
    """
    assert len(ours) == len(sequence)
    differences = []
    for k, (x, y) in enumerate(ours):
        expected_x, expected_y = sequence[k]
        assert x.dtype == np.uint8 and x.shape == expected_x.shape
        np.testing.assert_array_equal(y, expected_y)
        differences.extend(np.abs(x.astype(np.float64) - expected_x).mean(axis=(1, 2, 3)))
    assert np.median(differences) < 0.5, differences
    assert max(differences) < 5.0, differences


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_same_batches_as_face_sequence(val_sample, augment):
    index, images = val_sample
    pipeline = FacePipeline(index, images, batch_size=32, augment=augment, seed=3)
    sequence = FaceSequence(index, images, batch_size=32, augment=augment, seed=3)
    sequence.epoch = 2
    ours = batches(pipeline.epoch(2))
    assert len(pipeline) == len(sequence) == 13
    assert [len(x) for x, _ in ours] == [32] * 12 + [10]  # the last batch holds the remainder
    assert_same_batches(ours, sequence)


def test_same_pyramid_batches_as_face_sequence(val_sample):
    index, images = val_sample
    settings = dict(input_size=128, codec=PyramidCodec((8, 16, 32)), augment=Augment(crop_scale=(0.3, 1.0)), seed=5)
    pipeline = FacePipeline(index.take(np.arange(48)), images, batch_size=16, **settings)
    sequence = FaceSequence(index.take(np.arange(48)), images, batch_size=16, **settings)
    sequence.epoch = 1
    ours = batches(pipeline.epoch(1))
    assert ours[0][1].shape == (16, 16 * 16 + 8 * 8 + 4 * 4, 5)
    assert_same_batches(ours, sequence)
    assert sum(int((y[..., 0] == 1).sum()) for _, y in ours) > 200  # several cells per face


def test_epochs_follow_each_other_with_new_orders(val_sample):
    index, images = val_sample
    pipeline = FacePipeline(index, images, batch_size=100, seed=1)
    two = batches(pipeline.dataset(first_epoch=4, epochs=2))
    assert len(two) == 2 * len(pipeline) == 8
    by_epoch = [np.concatenate([y for _, y in two[:4]]), np.concatenate([y for _, y in two[4:]])]
    for epoch, targets in zip((4, 5), by_epoch):
        np.testing.assert_array_equal(targets, np.concatenate([y for _, y in batches(pipeline.epoch(epoch))]))
    assert not np.array_equal(by_epoch[0], by_epoch[1])  # a new order
    # every image exactly once per epoch: the multiset of targets is the same
    for targets in by_epoch:
        assert sorted(map(bytes, targets)) == sorted(map(bytes, by_epoch[0]))


def test_deterministic_and_reproducible(val_sample):
    index, images = val_sample
    subset = index.take(np.arange(40))
    a = batches(FacePipeline(subset, images, batch_size=8, augment=True, seed=5).epoch(1))
    b = batches(FacePipeline(subset, images, batch_size=8, augment=True, seed=5, parallel_calls=1).epoch(1))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_bundled_samples_png_and_no_face_image(samples):
    # camera.png goes through facegrid's reader, the JPEGs through TensorFlow's
    index = read_annotations(samples / "faces_bbx_gt.txt")
    pipeline = FacePipeline(index, samples / "images", batch_size=3, shuffle=False)
    assert_same_batches(
        batches(pipeline.epoch(0)), FaceSequence(index, samples / "images", batch_size=3, shuffle=False)
    )


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation):
    upright = np.zeros((240, 320, 3), np.uint8)
    upright[:, :] = (30, 30, 200)
    upright[20:100, 40:120] = (230, 20, 20)  # the "face", top-left
    stored = {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    folder = tmp_path / "images"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(folder / "rotated.jpg", exif=exif, quality=95)
    annotations = tmp_path / "faces.txt"
    annotations.write_text("rotated.jpg\n1\n40 20 80 80 0 0 0 0 0 0 \n")
    pipeline = FacePipeline(annotations, folder, batch_size=1, input_size=64, codec=GridCodec(2), shuffle=False)
    ((x, y),) = batches(pipeline.epoch(0))
    assert_same_batches(
        [(x, y)], FaceSequence(annotations, folder, batch_size=1, input_size=64, codec=GridCodec(2), shuffle=False)
    )
    assert x[0, 12, 16, 0] > 180 and x[0, 12, 16, 2] < 80  # red at the top left
    assert x[0, 50, 50, 2] > 150  # blue elsewhere
    assert y[0, 0, 0, 0] == 1  # the face's cell


def test_missing_image_is_named_when_the_pipeline_is_built(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (64, 48)).save(folder / "here.jpg")
    index = read_annotations_from(tmp_path, ["here.jpg", "gone.jpg"])
    with pytest.raises(ImageError, match="gone.jpg: no such file"):
        FacePipeline(index, folder)


def read_annotations_from(tmp_path, names):
    path = tmp_path / "faces.txt"
    path.write_text("".join(f"{name}\n1\n1 1 10 10 0 0 0 0 0 0 \n" for name in names))
    return read_annotations(path)


def test_model_fit_reads_one_iterator_across_epochs(samples):
    keras = pytest.importorskip("keras")
    index = read_annotations(samples / "faces_bbx_gt.txt")
    pipeline = FacePipeline(index, samples / "images", batch_size=2, input_size=64, codec=GridCodec(2), seed=0)
    model = keras.Sequential(
        [keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(5, 32, strides=32)]
    )
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(pipeline.dataset(epochs=3), steps_per_epoch=len(pipeline), epochs=3, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3
