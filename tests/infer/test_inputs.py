"""Detection inputs (``facegrid.infer.inputs``): images found, distinct output names, result keys checked up front."""

from __future__ import annotations

from pathlib import PurePath

import pytest

from facegrid.core.errors import PathError
from facegrid.infer.inputs import annotated_names, find_images, submission_keys


def touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_find_images_recurses_into_folders(samples):
    found = find_images([samples / "images", samples / "images" / "portraits" / "camera.png"])
    names = [(image.name, folder is not None) for image, folder in found]
    assert names[:4] == [
        ("rocket.jpg", True),
        ("astronaut.png", True),
        ("camera.png", True),
        ("grace_hopper.jpg", True),
    ]
    assert names[4] == ("camera.png", False)


def test_folders_without_images_are_refused(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PathError, match=f"^{tmp_path / 'empty'}: no image files \\(.jpg .jpeg .png"):
        find_images([tmp_path / "empty"])
    touch(tmp_path, "videos/clip.mp4")
    with pytest.raises(PathError, match=r"\.tiff\), only 1 other file\(s\) such as clip.mp4$"):
        find_images([tmp_path / "videos"])
    touch(tmp_path, "photos/a.jpg")
    assert find_images([tmp_path / "videos", tmp_path / "photos"]) == [(tmp_path / "photos/a.jpg", tmp_path / "photos")]
    assert f"{tmp_path / 'videos'} holds no image files" in caplog.text


def test_annotated_names_are_distinct_and_repeat(tmp_path):
    touch(tmp_path, "a/1.jpg", "b/1.jpg", "d/x.jpg", "d/x.png", "d/x.png.jpg", "d/sub/y.JPEG")
    found = [(tmp_path / "a/1.jpg", None), (tmp_path / "b/1.jpg", None)] + find_images([tmp_path / "d"])
    names = [name.as_posix() for name in annotated_names(found)]
    assert names == ["1.jpg", "1-2.jpg", "sub/y.JPEG", "x.jpg", "x.png.jpg", "x.png-2.jpg"]
    assert annotated_names(found) == [PurePath(name) for name in names]


def test_submission_keys_need_event_folders_under_a_folder(tmp_path):
    images = touch(tmp_path / "images", "0--Parade/a.jpg", "1--Handshaking/b.jpg")
    assert submission_keys(find_images([images])) == ["0--Parade/a", "1--Handshaking/b"]
    with pytest.raises(PathError, match="a.jpg: given as a file, so its event is unknown"):
        submission_keys([(images / "0--Parade/a.jpg", None)])
    with pytest.raises(
        PathError,
        match=f"a.jpg: not in an event folder of {images / '0--Parade'}: "
        f"give the folder that holds the event folders \\({images}\\)",
    ):
        submission_keys(find_images([images / "0--Parade"]))
    with pytest.raises(
        PathError,
        match=f"a.jpg: not <event>/<name> under {tmp_path}: "
        f"give the folder that holds the event folders \\({images}\\)",
    ):
        submission_keys(find_images([tmp_path]))


def test_submission_keys_refuse_two_images_of_one_result_file(tmp_path):
    images = touch(tmp_path, "e/x.jpg", "e/x.png")
    with pytest.raises(PathError, match=f"x.png: its result file e/x.txt would replace that of {images / 'e/x.jpg'}"):
        submission_keys(find_images([images]))
