"""Writing outputs: never over an input, never over a file unless asked, never half a file; across every command."""

from __future__ import annotations

import os
import shutil
import tomllib

import cv2
import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner

from facegrid.cli import main
from facegrid.core.config import Config
from facegrid.core.errors import OutputExistsError, OverwritesInputError
from facegrid.core.files import check_outputs, write_atomically


@pytest.fixture
def tiny_model(tiny_pyramid):
    """The tiny pyramid detector, its settings beside it."""
    return tiny_pyramid / "tiny.keras"


def digests(folder):
    """Every file under ``folder`` with its bytes, to show that nothing changed."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_an_output_that_is_an_input_is_refused_by_any_of_its_names(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"pixels")
    os.symlink(photo, tmp_path / "link.jpg")
    os.link(photo, tmp_path / "hard.jpg")
    for name in ("photo.jpg", "link.jpg", "hard.jpg", "sub/../photo.jpg"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OverwritesInputError):
            check_outputs([tmp_path / name], [photo], overwrite=True)
    check_outputs([tmp_path / "new.jpg"], [photo])  # a new file is fine
    with pytest.raises(OutputExistsError):
        check_outputs([tmp_path / "hard.jpg"], [tmp_path / "other.jpg"])
    check_outputs([tmp_path / "hard.jpg"], [tmp_path / "other.jpg"], overwrite=True)
    assert photo.read_bytes() == b"pixels"


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("epoch 1\n")

    def fails(tmp):
        tmp.write_text("epoch 1\nepo")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, fails)
    assert target.read_text() == "epoch 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]  # no temporary file left


def test_detect_never_writes_over_the_image_it_reads(tiny_model, samples, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(samples / "images" / "portraits" / "grace_hopper.jpg", photos)
    before = digests(photos)
    for extra in ([], ["--overwrite"]):
        result = run("detect", photos / "grace_hopper.jpg", "--out", photos, "--model", tiny_model, *extra)
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: {photos / 'grace_hopper.jpg'}: an output would be written over this "
            "input; choose another place for the output\n"
        )
    folder = run("detect", photos, "--out", photos, "--model", tiny_model, "--overwrite")  # found in the folder
    assert folder.exit_code == 2 and "written over this input" in folder.stderr
    assert digests(photos) == before


def write_video(path, frames=3):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for k in range(frames):
        writer.write(np.full((64, 96, 3), 40 * k, np.uint8))
    writer.release()


def test_detect_never_empties_a_video_or_replaces_an_annotated_one(tiny_model, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "clip.mp4")
    before = digests(videos)
    into_itself = run("detect", videos / "clip.mp4", "--out", videos, "--model", tiny_model)
    assert into_itself.exit_code == 2 and "written over this input" in into_itself.stderr
    assert digests(videos) == before
    out = tmp_path / "out"
    assert run("detect", videos, "--out", out, "--model", tiny_model).exit_code == 0
    annotated = (out / "clip.mp4").read_bytes()
    assert cv2.VideoCapture(str(out / "clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    again = run("detect", videos, "--out", out, "--model", tiny_model)
    assert (
        again.exit_code == 2 and again.stderr == f"error: {out / 'clip.mp4'}: exists: pass --overwrite to replace it\n"
    )
    assert (out / "clip.mp4").read_bytes() == annotated
    assert run("detect", videos, "--out", out, "--model", tiny_model, "--overwrite").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]  # no temporary copy left beside it


def test_detect_refuses_existing_result_files_before_the_model_loads(tmp_path, samples):
    images = tmp_path / "images" / "e"
    images.mkdir(parents=True)
    shutil.copy(samples / "images" / "background" / "rocket.jpg", images / "a.jpg")
    (tmp_path / "sub" / "e").mkdir(parents=True)
    (tmp_path / "sub" / "e" / "a.txt").write_text("mine\n")
    result = run(
        "detect", tmp_path / "images", "--wider-submission", tmp_path / "sub", "--model", tmp_path / "absent.keras"
    )
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'sub' / 'e' / 'a.txt'}: exists: pass --overwrite to replace it\n"
    assert (tmp_path / "sub" / "e" / "a.txt").read_text() == "mine\n"


def test_plots_and_panels_replace_nothing_unless_asked(tmp_path, samples):
    annotations = samples / "faces_bbx_gt.txt"
    plot = tmp_path / "stats.png"
    plot.write_bytes(b"mine")
    refused = run("data", "stats", annotations, "--out", plot)
    assert refused.exit_code == 2 and refused.stderr == f"error: {plot}: exists: pass --overwrite to replace it\n"
    assert plot.read_bytes() == b"mine"
    assert run("data", "stats", annotations, "--out", plot, "--overwrite").exit_code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = run("data", "show", "--out", tmp_path / "show")
    assert shown.exit_code == 0
    panels = digests(tmp_path / "show")
    again = run("data", "show", "--out", tmp_path / "show")
    assert again.exit_code == 2 and "exists: pass --overwrite" in again.stderr
    assert digests(tmp_path / "show") == panels
    assert run("data", "show", "--out", tmp_path / "show", "--overwrite").exit_code == 0


def test_a_plot_is_never_written_over_an_image_it_reads(tmp_path, samples):
    images = tmp_path / "images" / "e"
    images.mkdir(parents=True)
    shutil.copy(samples / "images" / "background" / "rocket.jpg", images / "a.jpg")
    (tmp_path / "gt").mkdir()
    before = digests(tmp_path / "images")
    (tmp_path / "m.keras").write_bytes(b"not loaded: the plot is refused first")
    result = run(
        "val",
        tmp_path / "m.keras",
        "--images",
        tmp_path / "images",
        "--ground-truth",
        tmp_path / "gt",
        "--plot",
        images / "a.jpg",
        "--overwrite",
    )
    assert result.exit_code == 2 and "written over this input" in result.stderr
    assert digests(tmp_path / "images") == before


def test_export_never_replaces_its_own_model_or_settings(tiny_model, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(tiny_model, folder)
    settings = tomllib.loads(tiny_model.with_suffix(".toml").read_text(encoding="utf-8"))
    defaults = tomllib.loads(Config().to_toml())
    # as an older release wrote it: the settings that differ from the defaults only
    (folder / "tiny.toml").write_text(tomli_w.dumps({k: v for k, v in settings.items() if v != defaults[k]}))
    model = folder / "tiny.keras"
    before = digests(folder)
    over_itself = run("export", model, model, "--overwrite")
    assert over_itself.exit_code == 2 and "written over this input" in over_itself.stderr
    # the same settings beside an export of another format are shared, not rewritten
    shared = run("export", model, folder / "tiny.tflite")
    assert shared.exit_code == 0 and shared.stdout == f"wrote {folder / 'tiny.tflite'} and {folder / 'tiny.toml'}\n"
    # other settings would replace the model's own: refused even with --overwrite
    other_size = run("export", model, folder / "tiny.tflite", "--detect-size", "96", "--overwrite")
    assert other_size.exit_code == 2 and f"{folder / 'tiny.toml'}: an output would be written over" in other_size.stderr
    assert {k: v for k, v in digests(folder).items() if k in before} == before
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "mine.jpg").write_bytes(b"x")
    into_folder = run("export", model, photos, "--format", "saved_model", "--overwrite")
    assert into_folder.exit_code == 2 and "not a SavedModel" in into_folder.stderr
    assert (photos / "mine.jpg").read_bytes() == b"x"
