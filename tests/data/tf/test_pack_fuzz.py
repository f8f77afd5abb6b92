"""Fuzzing packed sets: damaged manifests and shards through data check and train, odd arguments to data pack.

Each test packs tiny generated images once, with the real pack, and each
example works on a copy of that pack, changed as a damaged disk, an editor or
an interrupted pack would leave it. Whatever it is given, a command ends with
a documented exit status (0, 1 or 2), never a traceback, and a refusal has
one error line on stderr (``assert_behaves``). Training is tried on every set
``data check`` does not pass, and on every set holding a PNG, which the
pure-TensorFlow pipeline cannot decode: it must refuse them in one line
before it builds a model (then it is cheap). A set that check passes is not
trained on, nor one whose only fault is a shard's sha256, which training
does not compute.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from fuzzing import FUZZ, assert_behaves, mostly
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_packed import TINY_TRAINING

import facegrid.train.run
from facegrid.data.tf.pack import LOCK, STAGING, pack_dataset
from facegrid.wider.annotations import read_annotations

#: Examples a test runs: each costs milliseconds (training is refused before a model is built).
PACK_FUZZ = settings(FUZZ, max_examples=150)

#: The images in the images folder: tiny JPEGs, a PNG, and a file no image (None), each listed with one face.
IMAGES = {"e/a.jpg": "JPEG", "e/b.jpg": "JPEG", "e/c.png": "PNG", "e/d.jpg": None}

#: The packs each example starts from: the images packed (in this order) and the shard count.
BASES = {
    "one JPEG": (["e/a.jpg"], 1),
    "two JPEGs": (["e/a.jpg", "e/b.jpg"], 2),
    "with a PNG": (["e/a.jpg", "e/c.png", "e/b.jpg"], 2),
}


def image_bytes(name: str) -> bytes:
    if IMAGES[name] is None:
        return b"\xff\xd8\xff\xe0 a JPEG that stops"
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 24, 3), len(name) * 9, np.uint8)).save(buffer, IMAGES[name])
    return buffer.getvalue()


def write_dataset(root: Path, names: list[str]) -> tuple[Path, Path]:
    """An images folder of :data:`IMAGES` and an annotation file listing ``names``; returns both."""
    for name in IMAGES:
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / name).write_bytes(image_bytes(name))
    annotations = root / "gt.txt"
    annotations.write_text("".join(f"{name}\n1\n2 2 10 10 0 0 0 0 0 0 \n" for name in names))
    return annotations, root / "images"


@pytest.fixture
def bases(tmp_path_factory):
    """Each of :data:`BASES` packed once per test, by :func:`facegrid.data.tf.pack.pack_dataset`."""
    root = tmp_path_factory.mktemp("bases")
    packs = {}
    for label, (names, shards) in BASES.items():
        annotations, images = write_dataset(root / label, names)
        pack_dataset(read_annotations(annotations), images, root / label / "packed", shards=shards, workers=1)
        packs[label] = root / label / "packed"
    return packs


#: Values a manifest field may be set to: mostly a count, else of another type or out of range.
VALUES = mostly(
    st.integers(0, 5),
    st.none(),
    st.booleans(),
    st.integers(-3, 10**20),
    st.floats(),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=1),
)

#: Shard names a manifest may list: outside the folder, unusable, or another shard's.
SHARD_NAMES = st.sampled_from(
    ["..", "../x", "/etc/hostname", "a\0b", "", ".", "sub/../../x", "\ud800", "link", "manifest.json", "other"]
)

TOP_KEYS = st.sampled_from(
    [
        "facegrid_version",
        "name",
        "split",
        "annotations",
        "images",
        "faces",
        "skipped_images",
        "skipped",
        "shards",
        "extra",
    ]
)
SHARD_KEYS = st.sampled_from(["file", "examples", "bytes", "sha256", "extra"])

#: One change each, as a tuple: its kind, then where and how. Shards are changed most often.
CHANGES = {
    "set field": st.tuples(TOP_KEYS, VALUES),
    "drop field": st.tuples(TOP_KEYS),
    "set shard field": st.tuples(st.integers(0, 2), SHARD_KEYS, VALUES),
    "drop shard field": st.tuples(st.integers(0, 2), SHARD_KEYS),
    "name shard": st.tuples(st.integers(0, 2), SHARD_NAMES),
    "cut manifest": st.tuples(st.floats(0, 1), st.one_of(st.binary(max_size=8), st.just(b"[" * 5000))),
    "manifest folder": st.tuples(),
    "truncate": st.tuples(st.integers(0, 2), st.floats(0, 1)),
    "flip": st.tuples(st.integers(0, 2), st.floats(0, 1), st.integers(1, 255)),
    "remove": st.tuples(st.integers(0, 2)),
    "empty": st.tuples(st.integers(0, 2)),
    "rename": st.tuples(st.integers(0, 2)),
    "copy other over": st.tuples(st.integers(0, 2)),
    "leftovers": st.tuples(),
}
CHANGE = st.sampled_from([*CHANGES, "truncate", "flip", "flip", "leftovers", "set shard field"]).flatmap(
    lambda kind: CHANGES[kind].map(lambda rest: (kind, *rest))
)


def _manifest(folder: Path):
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _shard_entry(manifest, k: int):
    """The manifest's shard entry ``k`` (modulo their count), if the manifest still lists shards as objects."""
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not shards or not isinstance(shards[k % len(shards)], dict):
        return None
    return shards[k % len(shards)]


def _edit_manifest(folder: Path, change) -> None:
    manifest = _manifest(folder)
    if not isinstance(manifest, dict):
        return
    kind, *rest = change
    if kind in ("set field", "drop field"):
        target, key = manifest, rest[0]
    else:
        target, key = _shard_entry(manifest, rest[0]), rest[1]
        if target is None:
            return
    if kind.startswith("set"):
        target[key] = rest[-1]
    elif kind.startswith("drop"):
        target.pop(key, None)
    else:  # name shard
        if key == "link" and not (folder / "link").is_symlink():
            (folder / "link").symlink_to(folder.parent / "outside")
        target["file"] = key
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _shard_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if ".tfrecord-" in path.name)


def _change_shard(folder: Path, change) -> None:
    kind, k, *rest = change
    files = _shard_files(folder)
    if not files:
        return
    path = files[k % len(files)]
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        path.write_bytes(bytes(data[: int(len(data) * rest[0])]))
    elif kind == "flip" and data:
        data[min(int(len(data) * rest[0]), len(data) - 1)] ^= rest[1]
        path.write_bytes(bytes(data))
    elif kind == "remove":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "rename":
        path.rename(path.with_name("renamed-" + path.name))
    elif kind == "copy other over" and len(files) > 1:
        shutil.copyfile(files[(k + 1) % len(files)], path)


def apply(folder: Path, change) -> None:
    """Make ``change`` (drawn from :data:`CHANGE`) to the packed ``folder``."""
    kind = change[0]
    if kind in ("set field", "drop field", "set shard field", "drop shard field", "name shard"):
        _edit_manifest(folder, change)
    elif kind == "cut manifest":
        if (folder / "manifest.json").is_file():
            text = (folder / "manifest.json").read_bytes()
            (folder / "manifest.json").write_bytes(text[: int(len(text) * change[1])] + change[2])
    elif kind == "manifest folder":
        if not (folder / "manifest.json").is_dir():
            (folder / "manifest.json").unlink(missing_ok=True)
            (folder / "manifest.json").mkdir()
    elif kind == "leftovers":
        (folder / f"{STAGING}k1ll3d").mkdir(exist_ok=True)
        (folder / f"{STAGING}k1ll3d" / "widerface-train.tfrecord-00000-of-00003").write_bytes(b"half")
        (folder / LOCK).touch()
    else:
        _change_shard(folder, change)


def train_on(folder: Path, run: Path):
    """``train --packed folder``: a model being built is an exception, which assert_behaves catches."""
    with mock.patch.object(facegrid.train.run, "_build", side_effect=AssertionError("a model was built")):
        return assert_behaves(["train", "--packed", folder, "--run", run, *TINY_TRAINING])


@PACK_FUZZ
@given(base=st.sampled_from(sorted(BASES)), changes=st.lists(CHANGE, max_size=3))
def test_damaged_packed_sets_are_checked_and_refused_for_training(workdir, bases, base, changes):  # noqa: F811
    root = workdir()
    folder = root / "packed"
    shutil.copytree(bases[base], folder)
    shutil.copyfile(next(iter(_shard_files(folder))), root / "outside")  # an intact shard outside the folder
    for change in changes:
        apply(folder, change)
    check = assert_behaves(["data", "check", folder, "--json", "--workers", "1"])
    errors = set(json.loads(check.stdout)["errors"]) if check.exit_code == 1 else set()
    event(f"data check: exit {check.exit_code}")
    holds_png = "e/c.png" in BASES[base][0]
    if check.exit_code == 0 and not holds_png or check.exit_code == 1 and errors == {"shard_sha256_mismatch"}:
        return  # training would read it: not tried, to stay cheap
    event("train --packed: refused")
    assert train_on(folder, root / "run").exit_code == 2, (base, changes, check.output)


#: What ``--out`` is: a new folder, a file, the images folder, the folder of the annotation file, a folder
#: of an interrupted pack's leftovers, one of a user's files, or a packed set.
OUTS = mostly(
    st.sampled_from(["new", "leftovers"]), st.sampled_from(["file", "images", "root", "user files", "packed"])
)

#: ``--name`` and ``--split``: left out, usable words, or not.
WORDS = mostly(st.none(), st.sampled_from(["faces", "val", "a_1"]), st.text(st.sampled_from("a-_./ \0é*"), max_size=4))


def _prepare_out(root: Path, out: str, bases) -> Path:
    path = {"images": root / "images", "root": root}.get(out, root / "out")
    if out == "file":
        path.write_bytes(b"not a folder")
    elif out == "leftovers":
        path.mkdir()
        apply(path, ("leftovers",))
    elif out == "user files":
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    elif out == "packed":
        shutil.copytree(bases["one JPEG"], path)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@PACK_FUZZ
@given(
    out=OUTS,
    listed=st.lists(st.sampled_from(["e/a.jpg", "e/b.jpg", "e/c.png"]), min_size=1, max_size=3, unique=True),
    broken=mostly(st.just(False), st.just(True)),
    shards=mostly(st.none(), st.integers(0, 5)),
    name=WORDS,
    split=WORDS,
    flags=st.lists(st.sampled_from([["--overwrite"], ["--on-bad-image", "skip"], ["--workers", "1"]]), max_size=2),
)
def test_data_pack_behaves(workdir, bases, out, listed, broken, shards, name, split, flags):  # noqa: F811
    root = workdir()
    annotations, images = write_dataset(root, listed + ["e/d.jpg"] * broken)
    target = _prepare_out(root, out, bases)
    inputs = {key: data for key, data in _files(root).items() if key == "gt.txt" or key.startswith("images/")}
    args = ["data", "pack", annotations, "--images", images, "--out", target]
    args += [
        *(["--shards", shards] if shards is not None else []),
        *(["--name", name] if name is not None else []),
        *(["--split", split] if split is not None else []),
        *(item for flag in flags for item in flag),
    ]
    staged = _staging(target)
    result = assert_behaves(args)
    event(f"data pack: exit {result.exit_code}")
    after = _files(root)
    assert all(after.get(key) == data for key, data in inputs.items()), "an input was written over"
    if out in ("images", "root", "file"):
        assert result.exit_code == 2
    assert _staging(target) <= staged  # a refusal leaves an earlier pack's leftovers, if any; nothing of its own
    if result.exit_code != 2:
        assert not _staging(target), "a pack that wrote left staging or its lock behind"
        assert assert_behaves(["data", "check", target]).exit_code == 0


def _staging(folder: Path) -> set[str]:
    """What packs keep in ``folder`` while they write: staging folders and the lock."""
    if not folder.is_dir():
        return set()
    return {path.name for path in folder.iterdir() if path.name.startswith(STAGING) or path.name == LOCK}
