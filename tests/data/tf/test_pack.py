"""facegrid data pack: TFRecord shards that give back the files and annotations, and data check of them."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from facegrid.cli import main
from facegrid.core.files import sha256_file
from facegrid.data.images import probe
from facegrid.data.tf import pack as pack_module
from facegrid.data.tf import records
from facegrid.data.tf.pack import split_of
from facegrid.wider.annotations import read_annotations


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def refused(*args) -> str:
    """Run a command expected to refuse its input: exit status 2 and one line on stderr, which is returned."""
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def pack(samples, out, *extra):
    return run("data", "pack", samples / "faces_bbx_gt.txt", "--images", samples / "images", "--out", out, *extra)


def shard_files(folder):
    return sorted(path for path in folder.iterdir() if ".tfrecord-" in path.name)


def read_records(folder) -> list[records.Record]:
    return [
        records.parse(serialized)
        for path in shard_files(folder)
        for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]


def test_pack_round_trip_gives_back_files_and_annotations(samples, tmp_path):
    result = pack(samples, tmp_path / "packed")
    assert result.exit_code == 0, result.output
    assert "packed 4 images, 3 faces into 1 shard(s)" in result.stdout and "images/s" in result.stdout
    manifest = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    assert (manifest["name"], manifest["split"], manifest["annotations"]) == ("widerface", "train", "faces_bbx_gt.txt")
    assert (manifest["images"], manifest["faces"], manifest["skipped_images"]) == (4, 3, 0)
    [shard] = manifest["shards"]
    path = tmp_path / "packed" / "widerface-train.tfrecord-00000-of-00001"
    assert shard == {"file": path.name, "examples": 4, "bytes": path.stat().st_size, "sha256": sha256_file(path)}

    index = read_annotations(samples / "faces_bbx_gt.txt")
    packed = {record.path: record for record in read_records(tmp_path / "packed")}
    assert sorted(packed) == sorted(index.paths.tolist())
    for image, name in enumerate(index.paths.tolist()):
        record, rows = packed[name], slice(index.offsets[image], index.offsets[image + 1])
        info = probe(samples / "images" / name)
        assert record.image == (samples / "images" / name).read_bytes()
        assert (record.width, record.height, record.orientation) == (info.width, info.height, info.orientation)
        np.testing.assert_array_equal(record.boxes, index.boxes[rows])
        np.testing.assert_array_equal(record.attributes, index.attributes[rows])
    assert packed["portraits/camera.png"].attributes.tolist() == [[0, 0, 0, 0, 0, 1]]  # pose, the last column

    check = run("data", "check", tmp_path / "packed")
    assert check.exit_code == 0, check.output
    assert "4 images, 3 face rows" in check.output and "errors: none" in check.output


def test_two_packs_are_byte_identical(samples, tmp_path):
    for out in ("a", "b"):
        assert pack(samples, tmp_path / out, "--shards", 2, "--workers", 3).exit_code == 0
    names = [path.name for path in shard_files(tmp_path / "a")]
    assert names == [path.name for path in shard_files(tmp_path / "b")] and len(names) == 2
    for name in names + ["manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_shards_hold_every_image_exactly_once(samples, tmp_path):
    assert pack(samples, tmp_path / "out", "--shards", 3, "--name", "faces", "--split", "val").exit_code == 0
    files = shard_files(tmp_path / "out")
    assert [path.name for path in files] == [f"faces-val.tfrecord-{k:05d}-of-00003" for k in range(3)]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    counts = [sum(1 for _ in tf.data.TFRecordDataset(str(path))) for path in files]
    assert counts == [shard["examples"] for shard in manifest["shards"]] == [2, 1, 1]  # image i in shard i mod 3
    paths = [record.path for record in read_records(tmp_path / "out")]
    assert sorted(paths) == sorted(read_annotations(samples / "faces_bbx_gt.txt").paths.tolist())
    assert not [path for path in (tmp_path / "out").iterdir() if path.name.startswith(".")]  # no temporaries left


def test_split_is_read_from_the_annotation_file_name():
    assert split_of("wider_face_split/wider_face_val_bbx_gt.txt") == "val"
    assert split_of("wider_face_train_sample_bbx_gt.txt") == "train"
    assert split_of("my-test.txt") == "test"
    assert split_of("contest_faces.txt") == "train"  # a word of the name, not any part of it


def test_data_check_catches_a_corrupted_shard(samples, tmp_path):
    assert pack(samples, tmp_path / "out").exit_code == 0
    [path] = shard_files(tmp_path / "out")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run("data", "check", tmp_path / "out", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["errors"]["shard_sha256_mismatch"] == 1
    assert "corrupt_record" in report["errors"]  # the record's own checksum fails too
    assert report["examples"]["shard_sha256_mismatch"][0].startswith(str(path))


def test_data_check_decodes_every_image_to_its_stored_size(samples, tmp_path):
    assert pack(samples, tmp_path / "out").exit_code == 0
    [path] = shard_files(tmp_path / "out")
    forged = []
    for record in read_records(tmp_path / "out"):
        if record.path == "portraits/grace_hopper.jpg":
            record = dataclasses.replace(record, width=record.width + 1)
        forged.append(records.serialize(record))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for serialized in forged:
            writer.write(serialized)
    manifest_path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0].update(bytes=path.stat().st_size, sha256=sha256_file(path))
    manifest_path.write_text(json.dumps(manifest))
    result = run("data", "check", tmp_path / "out")
    assert result.exit_code == 1
    assert "image_size_mismatch: 1" in result.output
    assert "grace_hopper.jpg): decodes to 512x600, stored 513x600" in result.output


def broken_dataset(samples, tmp_path):
    """The samples and, listed last, a file that is not a JPEG though it starts like one."""
    images = tmp_path / "images"
    shutil.copytree(samples / "images", images)
    (images / "portraits" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    annotations = tmp_path / "gt.txt"
    listed = (samples / "faces_bbx_gt.txt").read_text()
    annotations.write_text(listed + "portraits/broken.jpg\n1\n1 1 5 5 0 0 0 0 0 0 \n")
    return annotations, images


def test_bad_image_stops_the_pack_under_raise(samples, tmp_path):
    annotations, images = broken_dataset(samples, tmp_path)
    line = refused("data", "pack", annotations, "--images", images, "--out", tmp_path / "out")
    assert "broken.jpg: not a readable image" in line
    assert list((tmp_path / "out").iterdir()) == []  # no shard, finished or not


def test_bad_image_is_skipped_reported_and_counted_under_skip(samples, tmp_path):
    annotations, images = broken_dataset(samples, tmp_path)
    result = run("data", "pack", annotations, "--images", images, "--out", tmp_path / "out", "--on-bad-image", "skip")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"skipped {images / 'portraits' / 'broken.jpg'}: not a readable image")
    assert "packed 4 images, 3 faces" in result.stdout and "1 skipped" in result.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["images"], manifest["faces"], manifest["skipped_images"]) == (4, 3, 1)
    assert manifest["skipped"][0]["image"] == "portraits/broken.jpg"
    assert sorted(record.path for record in read_records(tmp_path / "out")) == sorted(
        read_annotations(samples / "faces_bbx_gt.txt").paths.tolist()
    )
    assert run("data", "check", tmp_path / "out").exit_code == 0


def test_pack_with_no_usable_image_is_refused(tmp_path):
    annotations = tmp_path / "gt.txt"
    annotations.write_text("e/a.jpg\n1\n1 1 5 5 0 0 0 0 0 0 \n")
    (tmp_path / "images").mkdir()
    line = refused(
        "data",
        "pack",
        annotations,
        "--images",
        tmp_path / "images",
        "--out",
        tmp_path / "out",
        "--on-bad-image",
        "skip",
    )
    assert "none of the 1 images" in line


def test_pack_refuses_a_folder_in_use_unless_overwrite(samples, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old-train.tfrecord-00000-of-00001").write_bytes(b"an earlier pack")
    (out / "notes.txt").write_text("mine")
    assert refused("data", "pack", samples / "faces_bbx_gt.txt", "--images", samples / "images", "--out", out) == (
        f"error: {out}: not empty: it holds 'notes.txt': pass --overwrite to replace it"
    )
    assert pack(samples, out, "--overwrite").exit_code == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "manifest.json",
        "notes.txt",
        "widerface-train.tfrecord-00000-of-00001",
    ]
    assert refused("data", "pack", samples / "faces_bbx_gt.txt", "--images", samples / "images", "--out", out) == (
        f"error: {out}: holds a packed set (manifest.json): pass --overwrite to replace it"
    )


def test_pack_never_writes_over_its_inputs_even_with_overwrite(samples, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(samples / "images", images)
    annotations = images / "faces_bbx_gt.txt"
    shutil.copy(samples / "faces_bbx_gt.txt", annotations)
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    args = ("data", "pack", annotations, "--images", images, "--overwrite", "--out")
    assert refused(*args, images) == (
        f"error: {images}: an output would be written over this input; choose another place for the output"
    )
    assert refused(*args, tmp_path) == (
        f"error: {tmp_path}: holds an input ({images}): an output written there could destroy it; "
        "choose another place for the output"
    )
    assert refused("data", "pack", annotations, "--images", samples / "images", "--out", images, "--overwrite") == (
        f"error: {images}: holds an input ({annotations}): an output written there could destroy it; "
        "choose another place for the output"
    )
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before


def test_a_rerun_removes_what_an_interrupted_pack_left_and_counts_the_folder_empty(samples, tmp_path, caplog):
    out = tmp_path / "out"
    staging = out / ".facegrid-pack-k1ll3d"  # a pack killed while writing 3 shards
    staging.mkdir(parents=True)
    (staging / "widerface-train.tfrecord-00000-of-00003").write_bytes(b"half a shard")
    (out / ".facegrid-pack.lock").touch()  # its lock, no longer held
    caplog.set_level(logging.INFO, logger="facegrid.data.tf.pack")
    result = pack(samples, out, "--shards", 2)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == [
        "manifest.json",
        "widerface-train.tfrecord-00000-of-00002",
        "widerface-train.tfrecord-00001-of-00002",
    ]
    assert f"removing {staging}, left by an interrupted pack" in caplog.messages


def test_two_packs_never_write_into_one_folder_at_once(samples, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".facegrid-pack.lock", "a") as held:  # as a pack writing there holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        line = refused("data", "pack", samples / "faces_bbx_gt.txt", "--images", samples / "images", "--out", out)
        assert line == f"error: {out}: another data pack is writing into it; wait for it to end"
        assert sorted(path.name for path in out.iterdir()) == [".facegrid-pack.lock"]  # its lock left alone


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be made")
def test_pack_into_a_folder_that_cannot_be_written_is_refused_in_one_line(samples, tmp_path):
    for out in (Path("/proc/self/facegrid-packed"), Path("/proc/self/facegrid/packed")):
        line = refused("data", "pack", samples / "faces_bbx_gt.txt", "--images", samples / "images", "--out", out)
        assert line.startswith(f"error: {out}: cannot write: "), line


@pytest.mark.parametrize("fails", ["opening", "writing"])
def test_tensorflow_failing_to_write_a_shard_is_one_line_naming_it(samples, tmp_path, monkeypatch, fails):
    class Writer(tf.io.TFRecordWriter):
        def __init__(self, path):
            if fails == "opening":
                raise tf.errors.PermissionDeniedError(None, None, f"{path}; Permission denied")
            super().__init__(path)

        def write(self, record):
            raise tf.errors.ResourceExhaustedError(None, None, "{{function_node Write}} No space left on device")

    monkeypatch.setattr(pack_module.tf.io, "TFRecordWriter", Writer)
    out = tmp_path / "out"
    line = refused("data", "pack", samples / "faces_bbx_gt.txt", "--images", samples / "images", "--out", out)
    reason = "Permission denied" if fails == "opening" else "No space left on device"
    assert re.fullmatch(
        rf"error: {re.escape(str(out))}/\.facegrid-pack-\w+/widerface-train\.tfrecord-00000-of-00001: "
        rf"cannot write: {reason}",
        line,
    ), line
    assert list(out.iterdir()) == []  # neither staging nor lock left


def test_pack_refuses_names_and_shard_counts_it_cannot_use(samples, tmp_path):
    assert "use only letters" in refused(
        "data",
        "pack",
        samples / "faces_bbx_gt.txt",
        "--images",
        samples / "images",
        "--out",
        tmp_path / "a",
        "--name",
        "a-b",
    )
    assert "more than the 4 images" in refused(
        "data",
        "pack",
        samples / "faces_bbx_gt.txt",
        "--images",
        samples / "images",
        "--out",
        tmp_path / "b",
        "--shards",
        5,
    )


@pytest.fixture(scope="module")
def two_shards(samples, tmp_path_factory):
    """The samples packed into two shards (shard 0: images 0 and 2, shard 1: images 1 and 3)."""
    out = tmp_path_factory.mktemp("packed") / "two"
    assert pack(samples, out, "--shards", 2).exit_code == 0
    return out


def copy_of(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "copy")
    return tmp_path / "copy"


def edit_manifest(folder, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def first_record_end(path) -> int:
    """Where the shard's second record starts: 8 bytes length, 4 its checksum, the data, 4 the data's checksum."""
    first = next(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    return 16 + len(first)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_data_check_names_a_damaged_record_after_the_examples_before_it(two_shards, tmp_path, damage):
    folder = copy_of(two_shards, tmp_path)
    path = folder / "widerface-train.tfrecord-00000-of-00002"
    data, start = bytearray(path.read_bytes()), first_record_end(path)
    if damage == "truncated":
        data = data[: start + 40]
    else:
        data[start + 40] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run("data", "check", folder, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == {"corrupt_record": 1, "shard_sha256_mismatch": 1}  # no count mismatch made of it
    [place] = report["examples"]["corrupt_record"]
    reason = "truncated record at" if damage == "truncated" else "corrupted record at"
    assert place.startswith(f"{path}: damaged after 1 example(s): {reason} "), place
    assert "{{" not in place and "[Op:" not in place and "IteratorGetNext" not in place


@pytest.mark.parametrize("empty", ["no shard", "no image", "shards hold none"])
def test_data_check_refuses_a_packed_set_that_holds_no_image(two_shards, tmp_path, empty):
    folder = copy_of(two_shards, tmp_path)

    def edit(manifest):
        if empty == "no shard":
            manifest["shards"] = []
        elif empty == "no image":
            manifest["images"] = 0
        else:
            for shard in manifest["shards"]:
                (folder / shard["file"]).write_bytes(b"")
                shard.update(examples=0, bytes=0, sha256=sha256_file(folder / shard["file"]))

    edit_manifest(folder, edit)
    assert refused("data", "check", folder) == f"error: {folder}: holds no image: " + (
        "its shards hold no example" if empty == "shards hold none" else "its manifest.json lists none"
    )


@pytest.mark.parametrize("where", ["../outside", "absolute", "link"])
def test_a_manifest_naming_a_shard_outside_its_folder_is_refused_unread(two_shards, tmp_path, where):
    folder = copy_of(two_shards, tmp_path)
    name = "widerface-train.tfrecord-00000-of-00002"
    outside = tmp_path / "outside"
    (folder / name).rename(outside)  # an intact shard: read, it would pass
    if where == "link":
        (folder / name).symlink_to(outside)
    listed = {"../outside": "../outside", "absolute": str(outside), "link": name}[where]
    edit_manifest(folder, lambda manifest: manifest["shards"][0].update(file=listed))
    line = refused("data", "check", folder)
    assert line.startswith(
        f"error: {folder / 'manifest.json'}: not a facegrid manifest (shard 0, {listed!r}, refused: "
    )
    assert "shard names must" in line or "leads outside the packed folder through a symbolic link" in line


def _set(key, value):
    return lambda manifest: manifest.update({key: value})


def _set_shard(key, value):
    return lambda manifest: manifest["shards"][0].update({key: value})


#: Manifests facegrid did not write, each with what the refusal says of it.
BAD_MANIFESTS = {
    "a count of text": (_set("images", "4"), "'images' is '4', not a count"),
    "a negative count": (_set_shard("examples", -1), "shard 0: 'examples' is -1, not a count"),
    "a true count": (_set("faces", True), "'faces' is True, not a count"),
    "a float count": (_set("faces", 3.0), "'faces' is 3.0, not a count"),
    "a key missing": (lambda manifest: manifest.pop("split"), "the manifest: no field 'split'"),
    "a shard key missing": (lambda manifest: manifest["shards"][1].pop("sha256"), "shard 1: no field 'sha256'"),
    "an unknown key": (_set("extra", 1), "unknown field 'extra'"),
    "shards not a list": (_set("shards", {"file": "x"}), "'shards' is {'file': 'x'}, not a list"),
    "a shard not an object": (lambda manifest: manifest["shards"].append("x"), "shard 2 is 'x', not an object"),
    "a NUL in a shard name": (_set_shard("file", "a\0b"), "a NUL byte in the path"),
    "a lone surrogate": (_set_shard("file", "\ud800"), "not a file name this system can encode"),
    "a shard listed twice": (lambda manifest: manifest["shards"].append(manifest["shards"][0]), "listed twice"),
    "a skipped entry": (_set("skipped", [3]), "skipped image 0 is 3, not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_manifest_facegrid_did_not_write_is_refused_in_one_line(two_shards, tmp_path, case):
    edit, reason = BAD_MANIFESTS[case]
    folder = copy_of(two_shards, tmp_path)
    edit_manifest(folder, edit)
    line = refused("data", "check", folder)
    assert line.startswith(f"error: {folder / 'manifest.json'}: not a facegrid manifest (") and reason in line, line


@pytest.mark.parametrize(
    "manifest", [b"\xff\xfe{}", b"[1, 2]", b"{", b'{"images": 1' + b"0" * 5000 + b"}", b"[" * 5000, None]
)
def test_a_manifest_that_is_no_json_object_is_refused_in_one_line(two_shards, tmp_path, manifest):
    folder = copy_of(two_shards, tmp_path)
    (folder / "manifest.json").unlink()
    if manifest is None:
        (folder / "manifest.json").mkdir()
    else:
        (folder / "manifest.json").write_bytes(manifest)
    line = refused("data", "check", folder)
    assert line.startswith(f"error: {folder / 'manifest.json'}: "), line
    assert "cannot read: Is a directory" in line if manifest is None else "not a facegrid manifest" in line


def test_a_huge_count_is_a_count_the_shards_disagree_with(two_shards, tmp_path):
    folder = copy_of(two_shards, tmp_path)
    edit_manifest(folder, _set("images", 10**30))
    result = run("data", "check", folder, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["errors"] == {"manifest_count_mismatch": 1}


def test_data_check_refuses_a_folder_without_manifest(samples, tmp_path):
    assert "no manifest.json" in refused("data", "check", tmp_path)
    assert "--images goes with an annotation file" in refused("data", "check", tmp_path, "--images", samples)


def test_pack_real_train_sample(wider, tmp_path):
    annotations = wider / "wider_face_split" / "wider_face_train_sample_bbx_gt.txt"
    if not annotations.is_file():
        pytest.skip(f"{annotations} not found")
    result = run("data", "pack", annotations, "--images", wider / "WIDER_train" / "images", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    index = read_annotations(annotations)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(index) == 1_202 and (manifest["images"], manifest["faces"]) == (len(index), index.num_faces)
