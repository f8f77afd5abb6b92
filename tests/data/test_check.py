"""data check of an annotation file and its images: kinds of image error told apart by type, odd paths refused.

Every path read from a file goes through one rule (``facegrid.core.paths.escape_reason``):
these tests hold it to that for a NUL byte in an annotation path, which no
file name can hold, in each command that reads one.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from test_screening import jpeg_bytes

from facegrid.cli import main
from facegrid.core.errors import ImageError, MissingImageError, RefusedPathError
from facegrid.core.paths import escape_reason, image_path
from facegrid.data import check as check_module
from facegrid.data.screening import none_usable
from facegrid.wider.annotations import read_annotations

FACE = "10 10 30 30 0 0 0 0 0 0 "


def dataset(tmp_path, names: list[str], present: tuple[str, ...] = ("a.jpg", "b.jpg")):
    """An annotation file listing ``names`` (one face each) and an images folder holding ``present``."""
    images = tmp_path / "images"
    images.mkdir()
    for name in present:
        (images / name).write_bytes(jpeg_bytes())
    annotations = tmp_path / "gt.txt"
    annotations.write_bytes("".join(f"{name}\n1\n{FACE}\n" for name in names).encode("utf-8"))
    return annotations, images


def check_json(annotations, images) -> dict:
    result = CliRunner().invoke(main, ["data", "check", str(annotations), "--images", str(images), "--json"])
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout)


def test_image_errors_are_told_apart_by_type_not_wording(tmp_path, monkeypatch):
    """A reason worded otherwise still counts as the kind its type says."""
    annotations, images = dataset(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    kinds = {"a.jpg": MissingImageError, "b.jpg": RefusedPathError, "c.jpg": ImageError}

    def verify(path):
        raise kinds[path.name](path, "worded some other way")

    monkeypatch.setattr(check_module, "verify_image", verify)
    report = check_json(annotations, images)
    assert report["errors"] == {"missing_image": 1, "refused_path": 1, "unreadable_image": 1}
    assert report["examples"]["refused_path"][0].endswith("b.jpg (" + f"{annotations}:4): worded some other way")


def test_missing_and_escaping_images_raise_their_own_types(tmp_path):
    annotations, images = dataset(tmp_path, ["gone.jpg", "link.jpg", "a.jpg"])
    os.symlink(annotations, images / "link.jpg")
    with pytest.raises(RefusedPathError, match="symbolic link"):
        image_path(images, "link.jpg")
    with pytest.raises(MissingImageError, match="no such file"):
        check_module.verify_image(image_path(images, "gone.jpg"))
    report = check_json(annotations, images)
    assert report["errors"] == {"missing_image": 1, "refused_path": 1}


def test_none_usable_names_the_folder_meant_when_every_image_is_missing_by_type(tmp_path):
    annotations, images = dataset(tmp_path, ["a.jpg"])
    index = read_annotations(annotations)
    missing = MissingImageError(tmp_path / "a.jpg", "worded some other way")
    assert str(none_usable(index, tmp_path, {0: missing})).endswith(f"; they are under {images}")
    unreadable = ImageError(tmp_path / "a.jpg", "no such file")  # the wording of a missing file, not its type
    assert "they are under" not in str(none_usable(index, tmp_path, {0: unreadable}))


@pytest.mark.parametrize("name", ["e/a\0.jpg", "\0", "a.jpg\0../../etc/passwd"])
def test_a_nul_byte_in_a_path_is_refused_by_the_one_rule(tmp_path, name):
    assert "NUL byte" in escape_reason(name)
    assert "NUL byte" in escape_reason(name, "shard names", "the packed folder", root=tmp_path)
    with pytest.raises(RefusedPathError, match="refused: a NUL byte"):
        image_path(tmp_path, name)


def test_data_check_reports_a_nul_byte_path_as_refused(tmp_path):
    annotations, images = dataset(tmp_path, ["a\0.jpg", "a.jpg"])
    report = check_json(annotations, images)
    assert report["errors"] == {"refused_path": 1}  # reported once, from the annotation file alone
    assert report["examples"]["refused_path"] == [
        f"{annotations}:1: 'a\\x00.jpg': a NUL byte in the path: image paths cannot hold one"
    ]


def test_pack_and_train_refuse_a_nul_byte_path_in_one_line(tmp_path, monkeypatch):
    import facegrid.train.run

    annotations, images = dataset(tmp_path, ["a.jpg", "b\0.jpg"])
    monkeypatch.setattr(facegrid.train.run, "_build", lambda config: pytest.fail("a model was built"))
    for args in (
        ["data", "pack", annotations, "--images", images, "--out", tmp_path / "out"],
        [
            "train",
            "--annotations",
            annotations,
            "--images",
            images,
            "--run",
            tmp_path / "run",
            "--epochs",
            "1",
            "--input-size",
            "64",
            "--grid-size",
            "2",
            "--backbone-weights",
            "none",
            "--alpha",
            "0.35",
        ],
    ):
        result = CliRunner().invoke(main, [str(arg) for arg in args])
        assert result.exit_code == 2, (args[0], result.output, result.exc_info)
        assert (
            result.stderr
            == f"error: {images / 'b'}\\x00.jpg: refused: a NUL byte in the path: image paths cannot hold one\n"
        )
