"""Bad images (``facegrid.data.screening``, ``facegrid.core.paths``): named when they stop a run, counted when skipped.

Every dataset here is built in ``tmp_path``: a few good JPEGs and one bad file
of each kind, listed in a WIDER-format annotation file.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from facegrid.core.codec import GridCodec
from facegrid.core.config import check_policy
from facegrid.core.errors import FileLineError, ImageError, PathError
from facegrid.core.paths import escape_reason, image_path
from facegrid.data import images as images_module
from facegrid.data.examples import ExampleBuilder, ExampleSource
from facegrid.data.screening import BadImages, screen
from facegrid.data.sequence import FaceSequence
from facegrid.wider.annotations import read_annotations

FACE = "10 10 30 30 0 0 0 0 0 0 "


def make_dataset(tmp_path, bad: dict[str, bytes | None], good: int = 5, extra_rows: dict[str, str] | None = None):
    """``good`` readable JPEGs plus files named by ``bad`` (None: listed but absent); returns (annotations, images)."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for k in range(good):
        name = f"good{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(folder / name, quality=90)
        names.append(name)
    for name, data in bad.items():
        if data is not None:
            (folder / name).write_bytes(data)
        names.insert(2, name)  # among the good ones
    rows = extra_rows or {}
    text = "".join(f"{name}\n1\n{rows.get(name, FACE)}\n" for name in names)
    annotations = tmp_path / "faces.txt"
    annotations.write_text(text)
    return annotations, folder


def jpeg_bytes(size=(80, 64)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def source_of(annotations, folder) -> ExampleSource:
    """The examples as listed, not yet screened."""
    return ExampleSource(read_annotations(annotations), folder, ExampleBuilder(32, GridCodec(2)))


# --------------------------------------------------------------------------- screening


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("missing.jpg", None, "no such file"),
        ("empty.jpg", b"", "file is empty"),
        ("text.jpg", b"just some text, not an image", "not a readable image"),
    ],
)
def test_screen_finds_files_that_cannot_be_read(tmp_path, name, data, reason):
    annotations, folder = make_dataset(tmp_path, {name: data})
    bad = screen(source_of(annotations, folder), verify=False)
    assert list(bad) == [2]
    assert bad[2].path.endswith(name) and reason in bad[2].reason


def test_truncated_jpeg_is_found_only_when_every_byte_is_decoded(tmp_path):
    whole = jpeg_bytes((400, 300))
    annotations, folder = make_dataset(tmp_path, {"cut.jpg": whole[: len(whole) // 2]})
    source = source_of(annotations, folder)
    assert screen(source, verify=False) == {}  # the header alone looks fine
    bad = screen(source, verify=True)
    assert list(bad) == [2] and bad[2].path.endswith("cut.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    annotations, folder = make_dataset(tmp_path, {"big.jpg": jpeg_bytes((400, 300))})
    monkeypatch.setattr(images_module, "MAX_PIXELS", 100_000)  # 400 x 300 = 120,000
    bad = screen(source_of(annotations, folder), verify=False)
    assert list(bad) == [2] and "too many pixels: 400 x 300" in bad[2].reason
    with pytest.raises(ImageError, match="too many pixels"):
        images_module.read_image(folder / "big.jpg")


def test_face_box_outside_its_image_names_the_annotation_line(tmp_path):
    annotations, folder = make_dataset(
        tmp_path, {"odd.jpg": jpeg_bytes()}, extra_rows={"odd.jpg": "100 10 20 20 0 0 0 0 0 0 "}
    )
    bad = screen(source_of(annotations, folder), verify=False)
    assert list(bad) == [2]
    assert (
        "face box [100, 10, 20, 20]" in bad[2].reason and "faces.txt:9" in bad[2].reason
    )  # the face row of the third image
    assert "outside the 80x64 image" in bad[2].reason


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "name", ["../secret.jpg", "a/../../secret.jpg", "/etc/passwd", "..\\secret.jpg", "C:\\Windows\\x.jpg", ""]
)
def test_escaping_paths_are_refused_without_opening(tmp_path, name):
    assert escape_reason(name) is not None
    with pytest.raises(ImageError, match="refused"):
        image_path(tmp_path, name)


def test_symlink_out_of_the_images_folder_is_refused(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    outside = tmp_path / "private.jpg"
    outside.write_bytes(jpeg_bytes())
    os.symlink(outside, folder / "link.jpg")
    (folder / "sub").mkdir()
    os.symlink(folder / "link.jpg", folder / "sub" / "inner.jpg")  # a link within the folder to the link
    with pytest.raises(ImageError, match="symbolic link"):
        image_path(folder, "link.jpg")
    with pytest.raises(ImageError, match="symbolic link"):
        image_path(folder, "sub/inner.jpg")
    os.symlink(folder / "sub", folder / "alias")  # a link that stays inside is fine
    (folder / "sub" / "real.jpg").write_bytes(jpeg_bytes())
    assert image_path(folder, "alias/real.jpg") == folder / "alias" / "real.jpg"
    assert escape_reason("event/name.jpg") is None


def test_escaping_path_in_an_annotation_file_stops_the_sequence(tmp_path):
    annotations, folder = make_dataset(tmp_path, {})
    text = annotations.read_text().replace("good3.jpg", "../../etc/hosts")
    annotations.write_text(text)
    with pytest.raises(ImageError, match="refused: '..' in the path"):
        FaceSequence(annotations, folder, batch_size=2, input_size=32, codec=GridCodec(2))


# --------------------------------------------------------------------------- policies


def test_policy_names_are_checked():
    assert check_policy("skip") == "skip"
    with pytest.raises(ValueError, match="on_bad_image must be 'raise' or 'skip'"):
        check_policy("ignore")


def test_sequence_raises_with_the_path_by_default(tmp_path):
    annotations, folder = make_dataset(tmp_path, {"missing.jpg": None})
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        FaceSequence(annotations, folder, batch_size=2, input_size=32, codec=GridCodec(2))


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_folder_holding_none_of_the_images_names_the_folder_that_does(tmp_path, policy):
    annotations, folder = make_dataset(tmp_path, {})
    for wrong, meant in ((tmp_path, folder), (folder / "sub", folder), (tmp_path / "other", None)):
        wrong.mkdir(exist_ok=True)
        with pytest.raises(
            PathError,
            match=f"^{wrong}: none of the 5 images {annotations} lists can be used "
            f"\\(first: {wrong / 'good0.jpg'}: no such file\\)",
        ) as caught:
            FaceSequence(annotations, wrong, batch_size=2, input_size=32, codec=GridCodec(2), on_bad_image=policy)
        assert str(caught.value).endswith(f"; they are under {meant}" if meant else "no such file)")


def test_sequence_skips_and_counts_files_found_up_front(tmp_path, caplog):
    annotations, folder = make_dataset(tmp_path, {"missing.jpg": None, "empty.jpg": b""})
    sequence = FaceSequence(annotations, folder, batch_size=2, input_size=32, codec=GridCodec(2), on_bad_image="skip")
    assert len(sequence.index) == 5 and len(sequence.bad_images) == 2
    assert sum("skipped" in r.message and "missing.jpg" in r.message for r in caplog.records) == 1
    assert [len(sequence[i][0]) for i in range(len(sequence))] == [2, 2, 1]


def test_sequence_skips_a_truncated_image_met_while_training(tmp_path):
    whole = jpeg_bytes((400, 300))
    annotations, folder = make_dataset(tmp_path, {"cut.jpg": whole[: len(whole) // 2]})
    strict = FaceSequence(annotations, folder, batch_size=3, input_size=32, codec=GridCodec(2), shuffle=False)
    with pytest.raises(ImageError, match="cut.jpg"):
        strict[0]
    lenient = FaceSequence(
        annotations, folder, batch_size=3, input_size=32, codec=GridCodec(2), shuffle=False, on_bad_image="skip"
    )
    x, y = lenient[0]  # images 0, 1 and, for the cut one, the next in order
    assert x.shape == (3, 32, 32, 3) and y.shape == (3, 2, 2, 5)
    assert len(lenient.bad_images) == 1 and "cut.jpg" in lenient.bad_images.errors[0].path
    lenient[0]
    assert len(lenient.bad_images) == 1  # logged and counted once


def test_tfdata_pipeline_finds_truncated_images_before_the_first_batch(tmp_path):
    pytest.importorskip("tensorflow")
    from facegrid.data.tf.pipeline import FacePipeline

    whole = jpeg_bytes((400, 300))
    annotations, folder = make_dataset(tmp_path, {"cut.jpg": whole[: len(whole) // 2]})
    with pytest.raises(ImageError, match="cut.jpg"):
        FacePipeline(annotations, folder, batch_size=2, input_size=32, codec=GridCodec(2))
    pipeline = FacePipeline(annotations, folder, batch_size=2, input_size=32, codec=GridCodec(2), on_bad_image="skip")
    assert len(pipeline.index) == 5 and len(pipeline.bad_images) == 1
    sizes = [len(x) for x, _ in pipeline.epoch(0).as_numpy_iterator()]
    assert sizes == [2, 2, 1]


# --------------------------------------------------------------------------- workers


def test_errors_survive_the_trip_from_a_worker_process():
    error = pickle.loads(pickle.dumps(ImageError("/data/a.jpg", "file is empty")))
    assert isinstance(error, ImageError) and error.path == "/data/a.jpg" and str(error) == "/data/a.jpg: file is empty"
    line_error = pickle.loads(pickle.dumps(FileLineError("faces.txt", 7, "expected a face row")))
    assert (line_error.path, line_error.line, str(line_error)) == ("faces.txt", 7, "faces.txt:7: expected a face row")
    bad = BadImages()
    bad.add(error)
    copy = pickle.loads(pickle.dumps(bad))
    assert len(copy) == 1 and "/data/a.jpg" in copy


@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["threads", "processes"])
def test_worker_error_reaches_model_fit_with_the_path(tmp_path, use_multiprocessing):
    keras = pytest.importorskip("keras")
    whole = jpeg_bytes((400, 300))
    annotations, folder = make_dataset(tmp_path, {"cut.jpg": whole[: len(whole) // 2]}, good=7)
    sequence = FaceSequence(
        annotations,
        folder,
        batch_size=2,
        input_size=32,
        codec=GridCodec(2),
        shuffle=False,
        workers=2,
        use_multiprocessing=use_multiprocessing,
    )
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(5, 16, strides=16)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ImageError, match="cut.jpg"):
        model.fit(sequence, epochs=1, verbose=0)


def test_data_check_reports_escaping_paths_with_their_line(tmp_path):
    from facegrid.data.check import check_dataset

    annotations, folder = make_dataset(tmp_path, {})
    annotations.write_text(annotations.read_text().replace("good1.jpg", "../outside.jpg"))
    outside = tmp_path / "linked.jpg"
    outside.write_bytes(jpeg_bytes())
    os.symlink(outside, folder / "good3.jpg.link")
    annotations.write_text(annotations.read_text().replace("good3.jpg", "good3.jpg.link"))
    for images in (None, folder):
        report = check_dataset(annotations, images)
        assert report.errors["refused_path"] == (1 if images is None else 2)
        assert any("faces.txt:4" in place and "'..'" in place for place in report.examples["refused_path"])
