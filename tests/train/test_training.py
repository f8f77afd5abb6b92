"""Training runs end to end on the bundled samples: run folder, checkpoints, resume, val AP, panels.

Validation on WIDER val with its official ground truth reads the real data in
``../shared/data/widerface`` (skipped where it is absent).
"""

from __future__ import annotations

import csv
import json
import shutil
import urllib.error

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import TINY_RUN
from PIL import Image

import facegrid.train.run
from facegrid.cli import main
from facegrid.core.config import Config, load_config
from facegrid.core.errors import ImageError, PathError, RunInUseError
from facegrid.core.resources import bundled_model_path
from facegrid.eval.ap import average_precision
from facegrid.eval.protocol import evaluate_wider
from facegrid.infer.detector import Detections, Detector
from facegrid.model.network import load_detector
from facegrid.train.curves import read_history
from facegrid.train.run import ValidationAP, train_detector, validation_ground_truth
from facegrid.wider.annotations import read_annotations, write_annotations
from facegrid.wider.ground_truth import SETTINGS, load_wider_ground_truth
from facegrid.wider.index import FaceFilter
from facegrid.wider.results import read_submission, write_image_result

TINY = TINY_RUN


def test_train_writes_run_folder_and_resumes(samples, tmp_path):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "run"
    train_detector(TINY, annotations, images, run, val_annotations=annotations, val_images=images, verbose=0)
    for name in ("config.toml", "train.log", "history.csv", "last.keras", "best.keras", "state.json"):
        assert (run / name).is_file(), name
    assert any((run / "logs").iterdir())  # TensorBoard
    assert load_config(run / "config.toml") == TINY
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 2 and 0.0 <= state["best_ap"] <= 1.0
    log = (run / "train.log").read_text()
    assert "input pipeline: tf.data" in log and "val_ap" in log
    assert log.count("input pipeline:") == 1  # each line once, those logged before the file existed included
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert "val_ap" in header and not {"val_easy", "val_medium", "val_hard"} & set(header)  # no WIDER val here
    assert f"validation: no official ground truth at {samples.parent / 'eval_tools' / 'ground_truth'}" in log
    assert not (run / "panels").exists()  # every 5 epochs by default
    first = keras.saving.load_model(run / "last.keras")
    iterations = int(first.optimizer.iterations)
    assert iterations == 2 * 2  # 4 images in batches of 2, two epochs

    train_detector(
        TINY.replace(epochs=3),
        annotations,
        images,
        run,
        val_annotations=annotations,
        val_images=images,
        resume=True,
        verbose=0,
    )
    assert json.loads((run / "state.json").read_text())["epoch"] == 3
    resumed = keras.saving.load_model(run / "last.keras")
    assert int(resumed.optimizer.iterations) == iterations + 2  # optimizer state carried on
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]  # as Keras and train.log number them
    for row in rows:  # the loss's terms logged beside it
        assert float(row["loss"]) == pytest.approx(float(row["score_loss"]) + 2.0 * float(row["box_loss"]), rel=0.05)
    assert (run / "results.png").stat().st_size > 0
    assert not list(run.glob("*.tmp*"))  # no temporary checkpoint left behind

    detector = Detector.load(run / "best.keras")
    assert detector.input_size == 64
    (found,) = detector.detect([images / "portraits" / "astronaut.png"])
    assert found.size == (512, 512)

    # the export keeps the network and its settings, without the optimizer's state
    out = tmp_path / "exported" / "tiny.keras"
    result = CliRunner().invoke(main, ["export", str(run / "last.keras"), str(out), "--detect-size", "128"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < (run / "last.keras").stat().st_size  # no optimizer state
    assert load_config(out.with_suffix(".toml")).detect_size == 128
    detector = Detector.load(out)
    assert detector.input_size == 128
    assert len(detector.detect([images / "portraits" / "camera.png"])) == 1


def test_a_run_stopped_before_its_first_epoch_starts_again_on_resume_and_a_run_is_refused_without_it(
    samples, tmp_path, monkeypatch
):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "run"
    config = TINY.replace(epochs=1, pipeline="sequence")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(facegrid.train.run.TrainingLoop, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            train_detector(config, annotations, images, run, verbose=0)
    assert (run / "config.toml").is_file() and not (run / "state.json").exists()
    with pytest.raises(RunInUseError) as info:
        train_detector(config, annotations, images, run, verbose=0)
    assert str(info.value).startswith(f"{run}: holds a run stopped before its first epoch ended (config.toml")
    assert not info.value.finished
    model = train_detector(config, annotations, images, run, resume=True, verbose=0)
    assert json.loads((run / "state.json").read_text())["epoch"] == 1
    assert int(model.optimizer.iterations) == 2
    log = (run / "train.log").read_text()
    assert "no epoch of the run finished; starting it again with its settings" in log
    assert "input pipeline: FaceSequence" in log  # the PyDataset, on request

    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(RunInUseError) as info:
        train_detector(config.replace(seed=1), annotations, images, run, verbose=0)
    assert str(info.value) == (
        f"{run}: holds a run already (config.toml, train.log, history.csv, state.json, last.keras, logs)"
    )
    assert info.value.finished
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing overwritten

    with pytest.raises(PathError) as info:
        train_detector(config.replace(epochs=2, head_channels=16), annotations, images, run, resume=True, verbose=0)
    assert str(info.value) == (
        f"{run / 'config.toml'}: the run was started with head_channels = 8; it cannot be resumed with "
        "head_channels = 16 (leave head_channels as it was, or start a new run)"
    )
    with pytest.raises(PathError, match=r"nothing to resume: no run was started here \(config.toml\)"):
        train_detector(TINY, annotations, images, tmp_path / "new", resume=True, verbose=0)


def _constant_val_ap(self, epoch, logs=None):  # a validation AP that never improves after the first epoch
    logs["val_ap"] = 0.5


def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights_and_early_stop(samples, tmp_path, monkeypatch):
    """Killed after a checkpoint (a half-written one left beside it), resumed: the same weights, optimizer state
    and early-stopping count as the run never stopped; and a run that stopped early stays stopped."""
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    monkeypatch.setattr(facegrid.train.run.ValidationAP, "on_epoch_end", _constant_val_ap)
    config = TINY.replace(epochs=6, warmup_epochs=1, early_stopping_patience=2)
    val = dict(val_annotations=annotations, val_images=images, verbose=0)
    whole = train_detector(config, annotations, images, tmp_path / "whole", **val)
    assert json.loads((tmp_path / "whole" / "state.json").read_text()) == {
        "epoch": 3,
        "best_ap": 0.5,
        "early_stopping": {"wait": 2, "best": 0.5},
    }

    save = facegrid.train.run.Checkpoints.on_epoch_end

    def save_then_die(self, epoch, logs=None):  # stopped dead after the second epoch's checkpoint
        save(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(facegrid.train.run.Checkpoints, "on_epoch_end", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_detector(config, annotations, images, tmp_path / "cut", **val)
    monkeypatch.setattr(facegrid.train.run.Checkpoints, "on_epoch_end", save)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["early_stopping"] == {"wait": 1, "best": 0.5}
    (tmp_path / "cut" / "last.tmp.keras").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves it
    resumed = train_detector(config, annotations, images, tmp_path / "cut", resume=True, **val)
    assert not list((tmp_path / "cut").glob("*.tmp*"))
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == 3  # not 2 + a fresh patience
    assert int(resumed.optimizer.iterations) == int(whole.optimizer.iterations) == 6
    for a, b in zip(whole.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)

    again = train_detector(
        config, annotations, images, tmp_path / "cut", resume=True, **val
    )  # a stopped run stays stopped
    assert int(again.optimizer.iterations) == 6
    assert "the run stopped early after epoch 3" in (tmp_path / "cut" / "train.log").read_text()


def test_a_pyramid_trains_validates_past_a_bad_image_and_detects_with_its_own_settings(samples, tmp_path):
    """An unreadable validation image stops a run, named, unless ``on_bad_image = "skip"`` leaves it out."""
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    shutil.copytree(images, tmp_path / "val")
    (tmp_path / "val" / "broken.jpg").write_bytes(b"not an image")
    val = tmp_path / "val.txt"
    val.write_text(annotations.read_text() + "broken.jpg\n1\n1 1 5 5 0 0 0 0 0 0 \n")
    config = TINY.replace(strides=(8, 16, 32), grid_size=0, epochs=1, detect_size=96)
    with pytest.raises(ImageError, match=f"{tmp_path / 'val' / 'broken.jpg'}: not a readable image"):
        train_detector(
            config, annotations, images, tmp_path / "raise", val_annotations=val, val_images=tmp_path / "val", verbose=0
        )
    config = config.replace(on_bad_image="skip", panels_every=1)
    run = tmp_path / "skip"
    train_detector(config, annotations, images, run, val_annotations=val, val_images=tmp_path / "val", verbose=0)
    log = (run / "train.log").read_text()
    assert f"skipped {tmp_path / 'val' / 'broken.jpg'}: not a readable image" in log
    assert "epoch 1: val_ap" in log and (run / "best.keras").is_file()
    with Image.open(run / "panels" / "epoch_001.jpg") as panel:  # all 5, the broken one a blank square
        assert panel.size == (960, 698)

    assert load_config(run / "config.toml") == config
    model = keras.saving.load_model(run / "last.keras")
    assert type(model.loss).__name__ == "PyramidLoss"
    detector = Detector.load(run / "best.keras", score_threshold=0.0)
    assert detector.codec == config.codec and detector.input_size == 96
    (found,) = detector.detect([images / "portraits" / "grace_hopper.jpg"])
    assert found.size == (512, 600) and len(found.boxes)


def test_imagenet_weights_offline_say_so_in_one_line(samples, tmp_path, monkeypatch):
    import keras.src.backend.config
    import keras.src.utils.file_utils
    from click.testing import CliRunner

    from facegrid.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path / "keras"))  # nothing cached
    monkeypatch.setattr(keras.src.utils.file_utils, "urlretrieve", offline)
    TINY.save(tmp_path / "tiny.toml")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--annotations",
            samples / "faces_bbx_gt.txt",
            "--images",
            samples / "images",
            "--run",
            tmp_path / "run",
            "--config",
            tmp_path / "tiny.toml",
            "--backbone-weights",
            "imagenet",
        ],
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    message = result.stderr
    assert "needs internet" in message and "Temporary failure in name resolution" in message
    assert "the default backbone_weights 'imagenet-bundled' with backbone_style 'torchvision' and alpha at" in message


def test_init_fine_tunes_from_the_bundled_model_with_its_settings(samples, tmp_path):
    from click.testing import CliRunner

    from facegrid.cli import main
    from facegrid.core.resources import bundled_model_path

    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "finetune"
    args = [
        "train",
        "--annotations",
        annotations,
        "--images",
        images,
        "--val-annotations",
        annotations,
        "--val-images",
        images,
        "--run",
        run,
        "--init",
        bundled_model_path(),
        "--epochs",
        "1",
        "--learning-rate",
        "1e-6",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    config = load_config(run / "config.toml")
    assert config.init == str(bundled_model_path()) and config.strides == (8, 16, 32)  # the model's own settings
    history = (run / "history.csv").read_text().splitlines()
    val_ap = float(history[-1].split(",")[history[0].split(",").index("val_ap")])
    assert val_ap > 0.9  # the bundled model finds each sample face from the first epoch on
    small = tmp_path / "small.toml"
    TINY.save(small)
    result = CliRunner().invoke(
        main,
        [str(a) for a in args[:-8]]
        + ["--run", str(tmp_path / "mismatch"), "--init", str(bundled_model_path()), "--config", str(small)],
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "its network is not the one these settings build" in result.output


def wider_val(wider, root, count):
    """The first ``count`` images of the WIDER val sample as ROOT/wider_face_split/val.txt, the official ground
    truth linked into ROOT/eval_tools/ground_truth, as a release lays them out; the images stay in ``wider``."""
    (root / "wider_face_split").mkdir(parents=True)
    (root / "eval_tools").mkdir()
    (root / "eval_tools" / "ground_truth").symlink_to(wider / "eval_tools" / "ground_truth")
    sample = read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt")
    write_annotations(sample.take(np.arange(count)), root / "wider_face_split" / "val.txt")
    return root / "wider_face_split" / "val.txt"


def test_wider_validation_logs_easy_medium_hard_and_draws_panels(wider, samples, tmp_path):
    val = wider_val(wider, tmp_path / "wider", 8)
    run = tmp_path / "run"
    train_detector(
        TINY.replace(epochs=3, panels_every=2),
        samples / "faces_bbx_gt.txt",
        samples / "images",
        run,
        val_annotations=val,
        val_images=wider / "WIDER_val" / "images",
        verbose=0,
    )
    rows = read_history(run / "history.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row in rows:
        for name in ("val_ap", "val_easy", "val_medium", "val_hard"):
            assert 0.0 <= row[name] <= 1.0, (row["epoch"], name)
    log = (run / "train.log").read_text()
    assert (
        "validation: WIDER easy/medium/hard AP (val_easy, val_medium, val_hard) each epoch on the 8 validation "
        f"images, against the 3,226 of {tmp_path / 'wider' / 'eval_tools' / 'ground_truth'}"
    ) in log
    assert sorted(p.name for p in (run / "panels").iterdir()) == ["epoch_002.jpg"]  # not after epochs 1 and 3
    with Image.open(run / "panels" / "epoch_002.jpg") as panel:
        panel.load()
        # 6 images, 3 squares of 320 a row; 2 rows of 320 + an 18-pixel caption, under a 22-pixel title
        assert panel.format == "JPEG" and panel.size == (960, 698)


def test_wider_numbers_are_those_of_evaluate_wider_on_the_same_detections(wider, tmp_path):
    index = read_annotations(wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt").take(np.arange(12))
    truth = load_wider_ground_truth(wider / "eval_tools" / "ground_truth")
    callback = ValidationAP(index, wider / "WIDER_val" / "images", TINY, FaceFilter(), ground_truth=truth)
    rng = np.random.default_rng(0)
    found = []
    for i in range(len(index)):  # the faces, moved and resized a little, and a few false positives
        faces = index.image_boxes(i)
        corner = faces[:, :2] + rng.normal(0, 1.5, (len(faces), 2))
        sides = (faces[:, 2:] - faces[:, :2]) * rng.uniform(0.8, 1.2, (len(faces), 1))
        stray = rng.uniform(0, 600, (4, 2))
        boxes = np.concatenate([np.concatenate([corner, corner + sides], 1), np.concatenate([stray, stray + 40], 1)])
        scores = rng.uniform(0.01, 1.0, len(boxes))
        found.append(Detections(str(index.paths[i]), (1024, 768), boxes.astype(np.float32), scores.astype(np.float32)))
    found[3] = None  # an image that could not be read: left out, faces and all
    metrics = callback.metrics(found)

    read = [i for i, dets in enumerate(found) if dets is not None]
    for i in read:
        write_image_result(tmp_path / "pred", str(index.paths[i]), found[i].boxes, found[i].scores)
    official = evaluate_wider(read_submission(tmp_path / "pred"), truth)  # what facegrid evaluate scores
    assert len(official.images) == 11 and all(0 < ap < 1 for ap in official.ap.values())
    assert {setting: metrics[f"val_{setting}"] for setting in SETTINGS} == official.ap  # to the last bit
    plain = average_precision({str(index.paths[i]): (found[i].boxes, found[i].scores) for i in read}, index.take(read))
    assert metrics["val_ap"] == plain.ap


def test_an_epoch_scores_what_facegrid_val_scores_for_its_model(wider, tmp_path):
    index = read_annotations(wider_val(wider, tmp_path / "wider", 6))
    images = tmp_path / "images"  # the same 6 images, alone in the folder facegrid val reads
    for path in index.paths.tolist():
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        (images / path).symlink_to(wider / "WIDER_val" / "images" / path)
    ground_truth = tmp_path / "wider" / "eval_tools" / "ground_truth"
    config = load_config(bundled_model_path().with_suffix(".toml")).replace(batch_size=1, panels_every=1)
    callback = ValidationAP(
        index,
        wider / "WIDER_val" / "images",
        config,
        FaceFilter(min_size=config.min_face_size),
        ground_truth=load_wider_ground_truth(ground_truth),
        panels=tmp_path / "panels",
    )
    callback.set_model(load_detector(bundled_model_path()))
    logs = {}
    callback.on_epoch_end(0, logs)
    val = CliRunner().invoke(
        main, ["val", str(bundled_model_path()), "--images", str(images), "--ground-truth", str(ground_truth), "--json"]
    )  # one image at a time, as batch_size 1
    assert val.exit_code == 0, val.output
    assert json.loads(val.stdout)["ap"] == {setting: logs[f"val_{setting}"] for setting in SETTINGS}
    assert all(0 < logs[f"val_{setting}"] <= 1 for setting in SETTINGS)
    with Image.open(tmp_path / "panels" / "epoch_001.jpg") as panel:
        assert panel.size == (960, 698)


def test_which_ground_truth_a_run_validates_against(wider, samples, tmp_path):
    val = wider_val(wider, tmp_path / "wider", 3)
    ground_truth = tmp_path / "wider" / "eval_tools" / "ground_truth"
    truth, note = validation_ground_truth(Config(), read_annotations(val))  # found beside the annotations
    assert len(truth.keys) == 3226 and note.endswith(f"on the 3 validation images, against the 3,226 of {ground_truth}")
    assert validation_ground_truth(Config(val_ground_truth="none"), read_annotations(val)) == (
        None,
        "val_ground_truth 'none': val_ap only",
    )

    shutil.copy(samples / "faces_bbx_gt.txt", tmp_path / "wider" / "wider_face_split" / "other.txt")
    others = read_annotations(tmp_path / "wider" / "wider_face_split" / "other.txt")  # not WIDER val images
    assert validation_ground_truth(Config(), others) == (
        None,
        (
            f"{ground_truth} does not list 4 of the 4 validation images, such as background/rocket.jpg: are they "
            "WIDER FACE validation images? val_ap only"
        ),
    )
    with pytest.raises(PathError, match="does not list 4 of the 4 validation images"):
        validation_ground_truth(Config(val_ground_truth=str(ground_truth)), others)
    with pytest.raises(PathError, match="no such folder"):
        validation_ground_truth(Config(val_ground_truth=str(tmp_path / "absent")), read_annotations(val))


def test_an_error_tensorflow_raises_while_training_is_one_line_naming_the_run(samples, tmp_path, monkeypatch):
    from facegrid.core.errors import TrainingError

    def exhausted(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None,
            None,
            "Graph execution error:\n\nDetected at node conv defined at (most recent call last):\n"
            '  File "train.py", line 1\n\nOOM when allocating tensor with shape[64,112,112,32]\n'
            "\t [[{{node conv}}]] [Op:__inference__global_step_1]",
        )

    monkeypatch.setattr(facegrid.train.run.TrainingLoop, "fit", exhausted)
    with pytest.raises(TrainingError) as info:
        train_detector(
            TINY.replace(epochs=1), samples / "faces_bbx_gt.txt", samples / "images", tmp_path / "run", verbose=0
        )
    assert str(info.value) == (
        f"{tmp_path / 'run'}: training stopped: TensorFlow's ResourceExhaustedError: "
        "OOM when allocating tensor with shape[64,112,112,32]"
    )
