"""The pure-TensorFlow pipeline over packed shards: every image once an epoch, each as over the images folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from unittest import mock

import numpy as np
import pytest
from conftest import TINY_RUN
from test_pipeline import batches
from test_puretf import PYTHON_OPS

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.errors import PathError
from facegrid.data.examples import ExampleSource
from facegrid.data.tf.pack import pack_dataset
from facegrid.data.tf.packed import read_packed
from facegrid.data.tf.puretf import PackedPipeline
from facegrid.scale.service import op_types
from facegrid.wider.annotations import read_annotations

tf = pytest.importorskip("tensorflow")
from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset  # noqa: E402  (what tf.distribute applies)

SHARDS = 5


@pytest.fixture(scope="module")
def packed(wider, tmp_path_factory):
    """The first 90 images of the val sample, packed into five shards, with their folder's index."""
    index = read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt").take(np.arange(90))
    images = wider / "WIDER_val" / "images"
    out = tmp_path_factory.mktemp("packed")
    pack_dataset(index, images, out, shards=SHARDS, workers=2)
    return index, images, out


def positions(dataset) -> list[int]:
    return [int(p) for p in dataset.as_numpy_iterator()]


def test_the_index_read_from_the_shards_is_the_annotation_files(packed):
    index, _, out = packed
    read = read_packed(out)
    assert read.index.paths.tolist() == index.paths.tolist()
    np.testing.assert_array_equal(read.index.offsets, index.offsets)
    np.testing.assert_array_equal(read.index.boxes, index.boxes)
    np.testing.assert_array_equal(read.index.attributes, index.attributes)
    np.testing.assert_array_equal(read.positions, np.arange(90))


@pytest.mark.parametrize(
    "augment, codec",
    [(False, GridCodec(4)), (True, GridCodec(4)), (True, PyramidCodec((8, 16, 32)))],
    ids=["plain", "augmented", "pyramid"],
)
def test_each_image_gives_the_example_it_gives_over_the_folder(packed, augment, codec):
    index, images, out = packed
    settings = dict(input_size=128, codec=codec, augment=augment, seed=7)
    pipeline = PackedPipeline(out, batch_size=8, **settings)
    epoch = 3
    order = positions(pipeline.positions(epoch))
    served = batches(pipeline.epoch(epoch))
    assert [len(x) for x, _ in served] == [8] * 11 + [2] and len(pipeline) == 12
    xs = np.concatenate([x for x, _ in served])
    ys = np.concatenate([y for _, y in served])
    folder = ExampleSource.create(index, images, **settings)
    differences = []
    for k, image in enumerate(order):
        x, size, jitter = folder.pixels(epoch, image)
        np.testing.assert_array_equal(ys[k], folder.targets([image], [size], [jitter])[0])
        differences.append(np.abs(xs[k].astype(np.float64) - x).mean())
    assert np.median(differences) < 0.5 and max(differences) < 5.0, differences


def test_every_image_once_an_epoch_in_an_order_of_the_seeds(packed):
    _, _, out = packed
    pipeline = PackedPipeline(out, batch_size=8, seed=1)
    orders = [positions(pipeline.positions(epoch)) for epoch in range(3)]
    for order in orders:
        assert sorted(order) == list(range(90))
    assert orders[0] != orders[1] != orders[2]
    assert orders[1] == positions(PackedPipeline(out, batch_size=8, seed=1).positions(1))  # reproducible
    assert orders[1] != positions(PackedPipeline(out, batch_size=8, seed=2).positions(1))
    assert positions(PackedPipeline(out, shuffle=False).positions(0)) != list(range(90))  # shards interleaved
    assert sorted(positions(PackedPipeline(out, shuffle=False).positions(0))) == list(range(90))


def test_epochs_follow_each_other(packed):
    _, _, out = packed
    pipeline = PackedPipeline(out, batch_size=30, input_size=96, augment=True, seed=5)
    two = batches(pipeline.dataset(first_epoch=1, epochs=2))
    assert len(two) == 2 * len(pipeline) == 6
    for part, epoch in ((two[:3], 1), (two[3:], 2)):
        for (x, y), (expected_x, expected_y) in zip(part, batches(pipeline.epoch(epoch)), strict=True):
            np.testing.assert_array_equal(x, expected_x)
            np.testing.assert_array_equal(y, expected_y)


@pytest.mark.parametrize("readers", [2, 3, SHARDS])
def test_readers_together_serve_every_image_once_an_epoch(packed, readers):
    _, _, out = packed
    for epoch in range(2):
        shares = [
            positions(PackedPipeline(out, seed=4, num_input_pipelines=readers, input_pipeline_id=k).positions(epoch))
            for k in range(readers)
        ]
        assert sorted(sum(shares, [])) == list(range(90))
        manifest = json.loads((out / "manifest.json").read_text())
        for k, share in enumerate(shares):  # each reader keeps its shards, every epoch
            assert len(share) == sum(s["examples"] for s in manifest["shards"][k::readers])


def test_auto_sharding_by_file_splits_an_epoch_among_workers(packed):
    """What tf.distribute applies to each worker's copy of the dataset under ``AutoShardPolicy.FILE``."""
    _, _, out = packed
    pipeline = PackedPipeline(out, seed=6)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    for epoch in range(2):
        dataset = pipeline.positions(epoch).with_options(options)
        shares = [positions(_AutoShardDataset(dataset, num_workers=2, index=k)) for k in range(2)]
        assert all(shares) and sorted(sum(shares, [])) == list(range(90))
        assert not {p % SHARDS for p in shares[0]} & {p % SHARDS for p in shares[1]}  # whole shards (pack: i mod N)
    two_epochs = pipeline.dataset(epochs=2).with_options(options)
    served = [sum(len(x) for x, _ in batches(_AutoShardDataset(two_epochs, num_workers=2, index=k))) for k in range(2)]
    assert sum(served) == 2 * 90


def test_a_workers_share_reads_its_own_shards_and_serves_them_all_in_the_steps_asked(packed):
    """What a multi-worker run reads: worker k of 2 the shards k, k + 2, ..., every image of them once an epoch,
    in the steps one device takes on the whole set, however many images its shards hold."""
    _, _, out = packed
    pipeline = PackedPipeline(out, seed=6, batch_size=8, augment=True)
    assert len(pipeline) == 12  # 90 images in batches of 8
    shares = [pipeline.share(2, k) for k in range(2)]
    assert [share.examples for share in shares] == [54, 36]  # shards 0, 2, 4 and 1, 3 of 18 images each
    for k, share in enumerate(shares):
        alone = PackedPipeline(out, seed=6, batch_size=8, augment=True, num_input_pipelines=2, input_pipeline_id=k)
        assert positions(share.positions(1)) == positions(alone.positions(1))
        served = batches(share.dataset(first_epoch=1, epochs=2, batches=12))
        sizes = [len(x) for x, _ in served]
        assert len(sizes) == 24 and sum(sizes[:12]) == sum(sizes[12:]) == share.examples
        assert set(sizes) == ({4, 5} if k == 0 else {3})  # 54 or 36 images in 12 even parts
        for epoch, steps in ((1, served[:12]), (2, served[12:])):  # the epoch's examples, each once, in order
            whole = batches(alone.dataset(first_epoch=epoch))
            for got, want in zip((np.concatenate(part) for part in zip(*steps)), map(np.concatenate, zip(*whole))):
                np.testing.assert_array_equal(got, want)
    assert set(positions(shares[0].positions(1))).isdisjoint(positions(shares[1].positions(1)))
    with pytest.raises(ValueError, match="parts must be 1 to the 36 elements, got 37"):
        shares[1].dataset(batches=37)


def test_a_packed_set_whose_shards_cannot_feed_every_worker_every_step_is_refused(packed):
    from facegrid.core.errors import SettingsError
    from facegrid.train.run import _shard_shares

    _, _, out = packed
    assert _shard_shares(PackedPipeline(out, batch_size=8), 2, 1) == [54, 36]  # 12 steps: 4.5 and 3 images a step
    with pytest.raises(SettingsError, match="shards hold 36 images, fewer than its 1 replica.s. need for the 45 steps"):
        _shard_shares(PackedPipeline(out, batch_size=2), 2, 1)
    with pytest.raises(SettingsError, match="5 shard.s. for 6 workers: pack it into 6 or more"):
        _shard_shares(PackedPipeline(out, batch_size=8), 6, 1)


def test_no_python_runs_per_example(packed):
    _, _, out = packed
    dataset = PackedPipeline(out, augment=True, seed=0).dataset(epochs=2)
    assert "TFRecordDataset" in op_types(dataset)
    assert not op_types(dataset) & PYTHON_OPS


def test_bad_shares_and_folders_are_refused(packed, tmp_path):
    _, _, out = packed
    with pytest.raises(ValueError, match="num_input_pipelines must be 1 to the 5 shard"):
        PackedPipeline(out, num_input_pipelines=6)
    with pytest.raises(ValueError, match="input_pipeline_id must be 0 to 1"):
        PackedPipeline(out, num_input_pipelines=2, input_pipeline_id=2)
    with pytest.raises(PathError, match="no manifest.json"):
        PackedPipeline(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    for shard in manifest["shards"][1:]:
        (broken / shard["file"]).write_bytes((out / shard["file"]).read_bytes())
    with pytest.raises(PathError, match=r"tfrecord-00000-of-00005: missing: the manifest lists it"):
        read_packed(broken)
    (broken / manifest["shards"][0]["file"]).write_bytes((out / manifest["shards"][1]["file"]).read_bytes())
    with pytest.raises(PathError, match="examples, the manifest says|packed twice"):
        read_packed(broken)


def test_a_service_with_two_workers_serves_every_packed_image_once_an_epoch(packed):
    """Dynamic sharding hands out the shard files of each epoch, one worker each."""
    from facegrid.scale import service

    _, _, out = packed
    pipeline = PackedPipeline(out, seed=8)
    dispatcher = service.start_dispatcher(0)
    address = dispatcher.target.removeprefix("grpc://")
    workers = [service.start_worker(address, host=host) for host in ("localhost", "127.0.0.1")]  # as trainers reach it
    served = positions(service.distribute(pipeline.positions(0).concatenate(pipeline.positions(1)), address))
    assert sorted(served) == sorted(list(range(90)) * 2)
    for worker in workers:
        worker.stop()
    dispatcher.stop()


def test_training_reads_a_packed_set(packed, tmp_path):
    from facegrid.train.run import train_detector

    _, _, out = packed
    run = tmp_path / "run"
    config = TINY_RUN.replace(pipeline="puretf", batch_size=30, epochs=1)
    model = train_detector(config, None, out, run, verbose=0)
    assert int(model.optimizer.iterations) == 3  # 90 images in batches of 30
    assert "input pipeline: tf.data (PackedPipeline), 90 images in 3 batches" in (run / "train.log").read_text()
    with pytest.raises(ValueError, match="a packed training set is read by pipeline 'puretf', not 'tfdata'"):
        train_detector(config.replace(pipeline="tfdata"), None, out, tmp_path / "other", verbose=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--packed", "P", "--annotations", "a.txt"], "give --packed or --annotations with --images, not both"),
        (["--packed", "P", "--pipeline", "tfdata"], "a packed training set is read by pipeline 'puretf', not 'tfdata'"),
        (["--images", "I"], "give --annotations and --images (or --packed)"),
    ],
)
def test_train_takes_a_packed_set_or_annotations_with_images(tmp_path, args, message):
    from click.testing import CliRunner

    from facegrid.cli import main

    result = CliRunner().invoke(main, ["train", *args, "--run", str(tmp_path / "run")])
    assert result.exit_code == 2 and message in result.output


#: Settings that make training cheap, for the refusals below (they come before any model is built).
TINY_TRAINING = [
    "--epochs",
    "1",
    "--batch-size",
    "1",
    "--input-size",
    "64",
    "--grid-size",
    "2",
    "--backbone-weights",
    "none",
    "--alpha",
    "0.35",
]


def train_packed(folder, run):
    """``facegrid train --packed folder``, failing the test if it builds a model."""
    from click.testing import CliRunner

    import facegrid.train.run
    from facegrid.cli import main

    with mock.patch.object(facegrid.train.run, "_build", side_effect=AssertionError("a model was built")):
        return CliRunner().invoke(main, ["train", "--packed", str(folder), "--run", str(run), *TINY_TRAINING])


def refused_training(folder, run) -> str:
    """Run ``train --packed folder``, which must be refused in one line before a model is built; returns the line."""
    result = train_packed(folder, run)
    assert result.exit_code == 2, (result.output, result.exc_info)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert not run.exists(), "a refused run left its folder behind"
    return line


@pytest.fixture(scope="module")
def samples_packed(samples, tmp_path_factory):
    """The bundled samples (two JPEGs, two PNGs) packed into two shards."""
    out = tmp_path_factory.mktemp("samples") / "packed"
    pack_dataset(read_annotations(samples / "faces_bbx_gt.txt"), samples / "images", out, shards=2, workers=1)
    return out


def test_training_refuses_a_set_of_images_it_cannot_decode_naming_the_folder_and_image(samples_packed, tmp_path):
    with pytest.raises(PathError, match="2 image\\(s\\) are not JPEGs") as caught:
        PackedPipeline(samples_packed)
    assert caught.value.path == str(samples_packed)
    line = refused_training(samples_packed, tmp_path / "run")
    assert line.startswith(
        f"error: {samples_packed}: 2 image(s) are not JPEGs TensorFlow decodes to RGB, "
        "e.g. portraits/astronaut.png: the pure-TensorFlow pipelines read JPEGs only"
    ), line


def emptied(folder, tmp_path):
    """A copy of the packed ``folder`` whose shards hold no example, its manifest agreeing but for the image count."""
    from facegrid.core.files import sha256_file

    copy = tmp_path / "empty"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for shard in manifest["shards"]:
        (copy / shard["file"]).write_bytes(b"")
        shard.update(examples=0, bytes=0, sha256=sha256_file(copy / shard["file"]))
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_training_refuses_a_set_that_holds_no_image(samples_packed, tmp_path):
    empty = emptied(samples_packed, tmp_path)
    with pytest.raises(PathError, match="holds no image: its shards hold no example"):
        read_packed(empty)
    assert refused_training(empty, tmp_path / "run") == f"error: {empty}: holds no image: its shards hold no example"
    manifest = json.loads((empty / "manifest.json").read_text())
    (empty / "manifest.json").write_text(json.dumps({**manifest, "shards": []}))
    assert refused_training(empty, tmp_path / "run2") == f"error: {empty}: holds no image: its manifest.json lists none"


def test_a_damaged_shard_is_named_with_the_examples_before_the_damage(samples_packed, tmp_path):
    from facegrid.core.errors import DamagedShardError

    damaged = tmp_path / "damaged"
    shutil.copytree(samples_packed, damaged)
    path = damaged / "widerface-train.tfrecord-00001-of-00002"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DamagedShardError) as caught:
        read_packed(damaged)
    assert (caught.value.path, caught.value.examples) == (str(path), 1)
    assert str(caught.value).startswith(f"{path}: damaged after 1 example(s): truncated record at ")
    assert "{{" not in str(caught.value) and "[Op:" not in str(caught.value)
    assert refused_training(damaged, tmp_path / "run") == f"error: {caught.value}"


def test_an_image_placed_past_the_annotation_files_is_refused(samples_packed, tmp_path):
    from facegrid.core.files import sha256_file
    from facegrid.data.tf import records

    forged = tmp_path / "forged"
    shutil.copytree(samples_packed, forged)
    path = forged / "widerface-train.tfrecord-00000-of-00002"
    kept = [records.parse(serialized) for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in kept:
            writer.write(records.serialize(dataclasses.replace(record, position=record.position + 2**40)))
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["shards"][0].update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (forged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PathError, match="outside the 4 images of the annotation file packed"):
        read_packed(forged)


def test_training_refuses_a_set_whose_manifest_counts_other_faces(samples_packed, tmp_path):
    miscounted = tmp_path / "miscounted"
    shutil.copytree(samples_packed, miscounted)
    manifest = json.loads((miscounted / "manifest.json").read_text())
    (miscounted / "manifest.json").write_text(json.dumps({**manifest, "faces": 4}))
    assert refused_training(miscounted, tmp_path / "run") == (
        f"error: {miscounted / 'manifest.json'}: says 4 images, 4 faces; its shards hold 4, 3"
    )
