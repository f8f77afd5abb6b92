"""One training example (``facegrid.data.examples.ExampleBuilder``): boxes move with the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegrid.core.codec import GridCodec
from facegrid.data.augment import Augment
from facegrid.data.examples import ExampleBuilder
from facegrid.data.geometry import load_input, resize_region
from facegrid.data.images import image_size
from facegrid.wider.annotations import read_annotations
from facegrid.wider.index import FaceFilter

WIDTH, HEIGHT = 640, 480
# White "faces" on black, laid out on a diagonal so that their column ranges and their
# row ranges are pairwise disjoint (each white blob is found from column projections),
# and far enough apart to land in different cells of a 7x7 grid after any crop.
FACES = np.array(
    [[30, 30, 130, 110], [180, 130, 300, 230], [350, 240, 450, 330], [500, 350, 610, 460]], dtype=np.float32
)
SEEDS = range(40)


def synthetic_pixels() -> np.ndarray:
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in FACES.astype(int):
        pixels[y1:y2, x1:x2] = 255
    return pixels


@pytest.fixture(scope="module", params=["png", "jpg"])
def synthetic(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / f"faces.{request.param}"
    Image.fromarray(synthetic_pixels()).save(path, **({"quality": 95} if request.param == "jpg" else {}))
    return path


def white_blobs(x: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes ``[x1, y1, x2, y2)`` of the white rectangles visible in ``x``.

    Works because the rectangles' column ranges are disjoint (also after a flip).
    """
    lum = x.astype(np.float32).mean(axis=2)
    lo, hi = float(lum.min()), float(lum.max())
    if hi - lo < 60:
        return []
    white = lum > (lo + hi) / 2
    columns = white.any(axis=0)
    blobs = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        rows = np.flatnonzero(white[:, start:stop].any(axis=1))
        blobs.append((int(start), int(rows[0]), int(stop), int(rows[-1]) + 1))
    return blobs


def touches_border(blob, size) -> bool:
    x1, y1, x2, y2 = blob
    return x1 <= 1 or y1 <= 1 or x2 >= size - 1 or y2 >= size - 1


def check_boxes_on_white(x: np.ndarray, y: np.ndarray, codec: GridCodec):
    """Every target box covers a white blob tightly; every fully visible blob has a box."""
    size = x.shape[0]
    boxes, scores = codec.decode(y, size, size)
    np.testing.assert_array_equal(scores, 1.0)
    blobs = white_blobs(x)
    lum = x.astype(np.float32).mean(axis=2)
    matched = set()
    for box in boxes:
        distances = [np.abs(np.array(blob) - box).max() for blob in blobs]
        assert distances, f"box {box} but no white in the image"
        k = int(np.argmin(distances))
        assert distances[k] <= 2.5, f"box {box} does not match any white blob {blobs}"
        matched.add(k)
        bx1, by1, bx2, by2 = np.round(box).astype(int)
        inner = lum[by1 + 2 : by2 - 2, bx1 + 2 : bx2 - 2]
        assert inner.size and inner.min() > (lum.min() + lum.max()) / 2
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        assert lum[cy, cx] > (lum.min() + lum.max()) / 2
    for k, blob in enumerate(blobs):
        if not touches_border(blob, size):
            assert k in matched, f"fully visible face {blob} has no target (boxes {boxes})"
    return len(boxes)


def test_boxes_move_with_the_pixels_under_augmentation(synthetic):
    builder = ExampleBuilder(augment=Augment())
    counts, flipped = [], []
    for seed in SEEDS:
        x, y = builder(synthetic, FACES, np.random.default_rng(seed))
        assert x.dtype == np.uint8 and x.shape == (224, 224, 3)
        assert y.dtype == np.float32 and y.shape == (7, 7, 5)
        counts.append(check_boxes_on_white(x, y, builder.codec))
        # A flip shows as the first face (top-left of the photo) appearing top-right.
        blobs = white_blobs(x)
        if blobs:
            top = min(blobs, key=lambda b: b[1])
            flipped.append(top[0] > 112)
    # crops are square, at most the shorter side (480 of 640 px): three of the four faces fit at best
    assert min(counts) >= 1 and max(counts) == 3
    assert any(flipped) and not all(flipped)  # both cases were exercised


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_all_faces_without_cropping(synthetic, flip):
    builder = ExampleBuilder(augment=Augment(crop_scale=(1.0, 1.0), flip=flip))
    x, y = builder(synthetic, FACES, np.random.default_rng(0))
    assert check_boxes_on_white(x, y, builder.codec) == 4
    expected = FACES * np.array([224 / WIDTH, 224 / HEIGHT] * 2, dtype=np.float32)
    if flip:
        expected = np.stack([224 - expected[:, 2], expected[:, 1], 224 - expected[:, 0], expected[:, 3]], axis=1)
    boxes, _ = builder.codec.decode(y, 224, 224)
    order = lambda b: b[np.lexsort(b.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(boxes), order(expected), atol=1e-3)


def test_same_seed_same_example(synthetic):
    builder = ExampleBuilder(augment=Augment())
    for seed in (0, 1, 2):
        x1, y1 = builder(synthetic, FACES, np.random.default_rng(seed))
        x2, y2 = builder(synthetic, FACES, np.random.default_rng(seed))
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    a, _ = builder(synthetic, FACES, np.random.default_rng(0))
    b, _ = builder(synthetic, FACES, np.random.default_rng(1))
    assert not np.array_equal(a, b)


def test_no_augmentation_gives_the_resized_image_and_the_encoded_scaled_boxes(tmp_path):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    faces = np.array([[10, 20, 110, 140], [300, 100, 360, 180], [480, 280, 520, 320]], dtype=np.float32)
    for size, grid in ((224, 7), (96, 4)):
        codec = GridCodec(grid)
        x, y = ExampleBuilder(input_size=size, codec=codec)(path, faces)
        np.testing.assert_array_equal(x, resize_region(pixels, (0, 0, 500, 300), size))
        np.testing.assert_array_equal(x, load_input(path, size)[0])
        scaled = faces * np.array([size / 500, size / 300] * 2, dtype=np.float32)
        np.testing.assert_allclose(y, codec.encode(scaled, size, size), atol=1e-5)
        assert x.flags.c_contiguous


def test_no_augmentation_ignores_the_rng(synthetic):
    builder = ExampleBuilder()
    a = builder(synthetic, FACES)
    b = builder(synthetic, FACES, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_image_without_faces_gives_an_all_zero_target(synthetic):
    x, y = ExampleBuilder(augment=Augment())(synthetic, np.zeros((0, 4), dtype=np.float32), np.random.default_rng(0))
    assert x.shape == (224, 224, 3) and not y.any()


def test_bundled_samples(samples):
    index = read_annotations(samples / "faces_bbx_gt.txt")
    builder = ExampleBuilder()
    for i, path in enumerate(index.paths.tolist()):
        x, y = builder(samples / "images" / path, index.image_boxes(i))
        assert x.shape == (224, 224, 3) and x.dtype == np.uint8
        assert int((y[..., 0] == 1).sum()) == index.faces_per_image()[i]


def test_real_wider_val_image(wider):
    index = FaceFilter().apply(read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"))
    folder = wider / "WIDER_val" / "images"
    codec = GridCodec(7)
    builder = ExampleBuilder(input_size=224, codec=codec)
    augmented = ExampleBuilder(input_size=224, codec=codec, augment=Augment())
    chosen = [i for i in range(len(index)) if 1 <= index.faces_per_image()[i] <= 40][:3]
    assert chosen
    for i in chosen:
        path = folder / index.paths[i]
        boxes = index.image_boxes(i)
        x, y = builder(path, boxes)
        assert x.dtype == np.uint8 and x.shape == (224, 224, 3)
        assert y.dtype == np.float32 and y.shape == (7, 7, 5)
        width, height = image_size(path)
        scaled = boxes * np.array([224 / width, 224 / height] * 2, dtype=np.float32)
        kept = codec.assign(scaled, 224, 224)
        assert int((y[..., 0] == 1).sum()) == len(kept) >= 1
        decoded, _ = codec.decode(y, 224, 224)
        clipped = np.clip(scaled[kept], 0, 224)
        order = lambda b: b[np.lexsort(b.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(order(decoded), order(clipped), atol=1e-2)
        xa, ya = augmented(path, boxes, np.random.default_rng(i))
        assert xa.shape == (224, 224, 3) and ya.shape == (7, 7, 5)
        assert int((ya[..., 0] == 1).sum()) <= len(boxes)


def test_targets_of_a_batch_are_those_of_its_images_one_by_one(split_file):
    index = read_annotations(split_file("train"))
    builder = ExampleBuilder(augment=Augment())
    rng = np.random.default_rng(4)
    images = rng.choice(len(index), 64, replace=False)
    boxes = [index.image_boxes(i) for i in images]
    ignore = [b[: len(b) // 3] for b in boxes]
    sizes = [(int(w), int(h)) for w, h in rng.integers(200, 1500, (64, 2))]
    jitters = [builder.jitter(rng) for _ in images]
    batch = builder.targets(boxes, sizes, jitters, ignore)
    for k in range(64):
        np.testing.assert_array_equal(batch[k], builder.targets([boxes[k]], [sizes[k]], [jitters[k]], [ignore[k]])[0])
    assert (batch[..., 0] == 1).sum() > 64
