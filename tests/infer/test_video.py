"""Videos through detect: an annotated copy, a JSON line per frame, refusals in one line; frames as images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facegrid.cli import main
from facegrid.data.geometry import input_pixels, load_input
from facegrid.infer.detector import Detector

SIZE = (320, 240)
FPS = 6


def portraits_then_rocket(samples) -> list[np.ndarray]:
    """12 RGB frames of one size: 4 of the astronaut, 4 of Grace Hopper, 4 of the rocket."""
    photos = [
        samples / "images" / "portraits" / "astronaut.png",
        samples / "images" / "portraits" / "grace_hopper.jpg",
        samples / "images" / "background" / "rocket.jpg",
    ]
    return [np.asarray(Image.open(photos[k // 4]).convert("RGB").resize(SIZE)) for k in range(12)]


@pytest.fixture
def clip(tmp_path, samples):
    """A 12-frame AVI (MPEG-4 video) of the sample photos, at 6 frames per second."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for pixels in portraits_then_rocket(samples):
        writer.write(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def frames_of(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_detect_writes_an_annotated_video_and_a_json_line_per_frame(clip, tmp_path):
    result = CliRunner().invoke(main, ["detect", str(clip), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    annotated = tmp_path / "out" / "clip.avi.mp4"  # MPEG-4 whatever the source container
    frames = frames_of(annotated)
    assert len(frames) == 12 and {f.shape for f in frames} == {(SIZE[1], SIZE[0], 3)}
    capture = cv2.VideoCapture(str(annotated))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()

    records = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: the JSON lines alone
    assert [r["frame"] for r in records] == list(range(12))
    assert [r["time"] for r in records] == [round(k / FPS, 3) for k in range(12)]
    assert {(r["path"], r["width"], r["height"]) for r in records} == {(str(clip), *SIZE)}
    assert [len(r["faces"]) for r in records] == [1] * 8 + [0] * 4  # one face per portrait, none on the rocket
    summary = result.stderr.splitlines()
    assert len(summary) == 1 and summary[0].startswith("12 frame(s) of 1 video(s): 8 face(s) in "), summary
    assert summary[0].endswith(" frames/s")


def test_without_json_a_video_is_one_line(clip, samples):
    photo = samples / "images" / "portraits" / "camera.png"
    result = CliRunner().invoke(main, ["detect", str(photo), str(clip)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{photo}: 1 face(s)", f"{clip}: 12 frame(s), 8 face(s)"]
    assert result.stderr.startswith("1 image(s) and 12 frame(s) of 1 video(s): 9 face(s) in ")
    assert result.stderr.rstrip().endswith(" images and frames/s")


def test_an_unreadable_video_is_one_line_or_skipped(tmp_path, samples):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 and nothing more")
    stopped = CliRunner().invoke(main, ["detect", str(broken), "--model", str(tmp_path / "absent.keras")])
    assert stopped.exit_code == 2  # before the model loads: it does not exist
    assert stopped.stderr == f"error: {broken}: not a video OpenCV can open\n"

    photo = samples / "images" / "portraits" / "astronaut.png"
    skipped = CliRunner().invoke(main, ["detect", str(broken), str(photo), "--on-bad-image", "skip"])
    assert skipped.exit_code == 1
    assert skipped.stderr.splitlines()[0] == f"skipped {broken}: not a video OpenCV can open"
    assert skipped.stdout == f"{photo}: 1 face(s)\n"


def test_a_video_has_no_wider_result_file(tmp_path, clip):
    (tmp_path / "videos" / "event").mkdir(parents=True)
    clip.rename(tmp_path / "videos" / "event" / "clip.avi")
    result = CliRunner().invoke(main, ["detect", str(tmp_path / "videos"), "--wider-submission", str(tmp_path / "sub")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {tmp_path / 'videos' / 'event' / 'clip.avi'}: a video has no WIDER result file: those are for images\n"
    )


def test_a_frame_is_detected_as_an_image_file_of_its_pixels(samples, tmp_path):
    frame = portraits_then_rocket(samples)[4]
    Image.fromarray(frame).save(tmp_path / "frame.png")  # lossless: the same pixels
    detector = Detector.load()  # a pyramid: the longer side fitted, the rest padded
    [from_file] = detector.detect([tmp_path / "frame.png"])
    [from_memory] = detector.detect_frames([frame], "frame")
    assert from_memory.size == from_file.size == SIZE
    np.testing.assert_array_equal(from_memory.boxes, from_file.boxes)
    np.testing.assert_array_equal(from_memory.scores, from_file.scores)
    # a single grid's stretched square: the same resize for files and arrays
    np.testing.assert_array_equal(input_pixels(frame, 64)[0], load_input(tmp_path / "frame.png", 64)[0])


def test_a_video_name_opencv_cannot_take_is_refused_not_a_crash(tmp_path):
    odd = tmp_path / "clip\udcff.mp4"  # a name that is not UTF-8: OpenCV would end the process
    odd.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    result = CliRunner().invoke(main, ["detect", str(odd), "--model", str(tmp_path / "absent.keras")])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: {tmp_path}/clip\\udcff.mp4: OpenCV opens only files whose names are UTF-8 text: rename it\n"
    )
