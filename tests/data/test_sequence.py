"""FaceSequence: shapes, dtypes, one sample per image, per-epoch order, and model.fit with workers."""

from __future__ import annotations

import json
import multiprocessing
import pickle

import keras
import numpy as np
import pytest

from facegrid import FaceFilter, FaceSequence, GridCodec, read_annotations
from facegrid.data.shared_batches import AVAILABLE as SHARED_MEMORY
from facegrid.model.network import PIXEL_OFFSET, PIXEL_SCALE


@pytest.fixture(scope="module")
def val_sample(wider):
    annotations = wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    images = wider / "WIDER_val" / "images"
    if not annotations.is_file() or not images.is_dir():
        pytest.skip(f"WIDER val sample not found under {wider}")
    return annotations, images


def test_batches_have_documented_shapes_and_dtypes(val_sample):
    annotations, images = val_sample
    seq = FaceSequence(annotations, images, batch_size=32, input_size=96, codec=GridCodec(6))
    assert len(seq) == 13  # ceil(394 / 32)
    x, y = seq[0]
    assert x.shape == (32, 96, 96, 3) and x.dtype == np.uint8
    assert y.shape == (32, 6, 6, 5) and y.dtype == np.float32
    assert set(np.unique(y[..., 0])) <= {-1.0, 0.0, 1.0}
    x_last, y_last = seq[len(seq) - 1]
    assert len(x_last) == len(y_last) == 394 - 12 * 32  # the last batch holds the remainder
    with pytest.raises(IndexError):
        seq[len(seq)]


def test_every_image_once_per_epoch_and_new_order_each_epoch(val_sample):
    annotations, images = val_sample
    seq = FaceSequence(annotations, images, batch_size=50, seed=7)
    orders = []
    for _ in range(3):
        orders.append(seq.order.copy())
        seq.on_epoch_end()
    for order in orders:
        assert sorted(order.tolist()) == list(range(394))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    again = FaceSequence(annotations, images, batch_size=50, seed=7)
    assert np.array_equal(again.order, orders[0])  # seeded: runs repeat
    plain = FaceSequence(annotations, images, shuffle=False)
    assert plain.order.tolist() == list(range(394))


def test_targets_hold_all_representable_faces_of_each_image(val_sample, wider):
    """One sample per image with all its faces, not one sample per face."""
    annotations, images = val_sample
    seq = FaceSequence(annotations, images, batch_size=8, shuffle=False, input_size=224, codec=GridCodec(7))
    index = FaceFilter().apply(read_annotations(annotations))
    codec = GridCodec(7)
    _, y = seq[0]
    from facegrid.data.images import image_size

    for k in range(8):
        width, height = image_size(images / str(index.paths[k]))
        expected = len(codec.assign(index.image_boxes(k), width, height))
        assert (y[k, ..., 0] == 1).sum() == expected


def test_batch_content_matches_its_images_in_shuffled_order(val_sample):
    annotations, images = val_sample
    shuffled = FaceSequence(annotations, images, batch_size=4, input_size=64, seed=3)
    plain = FaceSequence(annotations, images, batch_size=1, input_size=64, shuffle=False)
    x, y = shuffled[2]
    for k, image in enumerate(shuffled.order[8:12].tolist()):
        x_one, y_one = plain[image]
        np.testing.assert_array_equal(x[k], x_one[0])
        np.testing.assert_array_equal(y[k], y_one[0])


def test_augmentation_is_seeded_and_off_by_default(val_sample):
    annotations, images = val_sample
    plain_a = FaceSequence(annotations, images, batch_size=4, input_size=64, shuffle=False)
    plain_b = FaceSequence(annotations, images, batch_size=4, input_size=64, shuffle=False)
    np.testing.assert_array_equal(plain_a[0][0], plain_b[0][0])
    aug_a = FaceSequence(annotations, images, batch_size=4, input_size=64, shuffle=False, augment=True, seed=1)
    aug_b = FaceSequence(annotations, images, batch_size=4, input_size=64, shuffle=False, augment=True, seed=1)
    np.testing.assert_array_equal(aug_a[0][0], aug_b[0][0])
    assert not np.array_equal(aug_a[0][0], plain_a[0][0])
    first = aug_a[0][0]
    aug_a.on_epoch_end()
    assert not np.array_equal(aug_a[0][0], first)  # a new draw each epoch


def test_sequence_pickles(val_sample):
    annotations, images = val_sample
    seq = FaceSequence(annotations, images, batch_size=4, input_size=64, seed=5)
    seq.on_epoch_end()
    copy = pickle.loads(pickle.dumps(seq))
    assert copy.epoch == 1
    np.testing.assert_array_equal(copy.order, seq.order)
    np.testing.assert_array_equal(copy[1][1], seq[1][1])


def _share(dataset):
    global _DATASET
    _DATASET = dataset


def _batch(i):
    return _DATASET[i]


@pytest.mark.skipif(not SHARED_MEMORY, reason="POSIX shared memory only")
def test_batches_from_worker_processes_equal_those_built_in_process(val_sample, shm_blocks):
    annotations, images = val_sample
    seq = FaceSequence(
        annotations,
        images,
        batch_size=8,
        input_size=64,
        codec=GridCodec(4),
        seed=3,
        augment=True,
        workers=2,
        use_multiprocessing=True,
    )
    assert type(seq[0]) is tuple  # built in this process: plain arrays
    before = shm_blocks()
    context = multiprocessing.get_context("fork")  # as keras.utils.PyDataset's workers on Linux
    with context.Pool(2, initializer=_share, initargs=(seq,)) as pool:
        batches = pool.map(_batch, range(len(seq)))
    assert shm_blocks() == before
    for i, (x, y) in enumerate(batches):
        want_x, want_y = seq[i]
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)


class _RecordingSequence(FaceSequence):
    """Logs which images each batch served, from whichever thread or process built it."""

    def __init__(self, *args, log_path, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_path = str(log_path)

    def __getitem__(self, i):
        batch = super().__getitem__(i)
        chosen = self.order[i * self.batch_size : (i + 1) * self.batch_size].tolist()
        with open(self.log_path, "a") as log:
            log.write(json.dumps({"epoch": self.epoch, "images": chosen}) + "\n")
        return batch


@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["threads", "processes"])
def test_model_fit_with_two_workers(val_sample, tmp_path, use_multiprocessing):
    annotations, images = val_sample
    index = read_annotations(annotations)  # an Index works as well as a path
    log_path = tmp_path / "served.jsonl"
    seq = _RecordingSequence(
        index,
        images,
        batch_size=16,
        input_size=64,
        codec=GridCodec(4),
        seed=11,
        workers=2,
        use_multiprocessing=use_multiprocessing,
        log_path=log_path,
    )
    inputs = keras.Input((64, 64, 3), dtype="uint8")
    scaled = keras.layers.Rescaling(PIXEL_SCALE, PIXEL_OFFSET)(inputs)
    outputs = keras.layers.Conv2D(5, 16, strides=16, activation="sigmoid")(scaled)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(seq, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(history.history["loss"]))

    served: dict[int, list[int]] = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        served.setdefault(record["epoch"], []).extend(record["images"])
    # Keras reads a batch or two up front to learn the output signature, then
    # calls on_epoch_end before training starts: the trained epochs are the last two.
    epochs = sorted(served)[-2:]
    assert len(served) <= 3 and all(len(served[e]) < len(index) for e in sorted(served)[:-2])
    for epoch in epochs:
        assert sorted(served[epoch]) == list(range(len(index)))  # every image exactly once
    assert served[epochs[0]] != served[epochs[1]]
