"""Training runs end to end on the bundled samples: run folder, checkpoints, resume, val AP."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.error

import keras
import numpy as np
import pytest

import facegrid.train
from facegrid.config import Config, load_config
from facegrid.detect import Detector
from facegrid.errors import PathError
from facegrid.images import ImageError
from facegrid.train import train

TINY = Config(
    input_size=64, grid_size=4, alpha=0.35, backbone_weights="none", backbone_style="keras", head_channels=8,
    batch_size=2, epochs=2, workers=1, warmup_epochs=0, early_stopping_patience=0,
)


def test_train_writes_run_folder_and_resumes(samples, tmp_path):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "run"
    train(TINY, annotations, images, run, val_annotations=annotations, val_images=images, verbose=0)
    for name in ("config.toml", "train.log", "history.csv", "last.keras", "best.keras", "state.json"):
        assert (run / name).is_file(), name
    assert any((run / "logs").iterdir())  # TensorBoard
    assert load_config(run / "config.toml") == TINY
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 2 and 0.0 <= state["best_ap"] <= 1.0
    log = (run / "train.log").read_text()
    assert "input pipeline: tf.data" in log and "val_ap" in log
    first = keras.saving.load_model(run / "last.keras")
    iterations = int(first.optimizer.iterations)
    assert iterations == 2 * 2  # 4 images in batches of 2, two epochs

    train(TINY.replace(epochs=3), annotations, images, run, val_annotations=annotations, val_images=images,
          resume=True, verbose=0)
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


def test_resumed_run_ends_where_an_uninterrupted_run_ends(samples, tmp_path, monkeypatch):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    config = TINY.replace(epochs=3, warmup_epochs=1)
    whole = train(config, annotations, images, tmp_path / "whole", verbose=0)

    save = facegrid.train.Checkpoints.on_epoch_end

    def save_then_die(self, epoch, logs=None):  # stopped dead right after the first checkpoint
        save(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(facegrid.train.Checkpoints, "on_epoch_end", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, annotations, images, tmp_path / "cut", verbose=0)
    monkeypatch.undo()
    (tmp_path / "cut" / "last.tmp.keras").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves it
    resumed = train(config, annotations, images, tmp_path / "cut", resume=True, verbose=0)
    assert not list((tmp_path / "cut").glob("*.tmp*"))
    assert int(resumed.optimizer.iterations) == int(whole.optimizer.iterations) == 6
    for a, b in zip(whole.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


def test_face_sequence_pipeline_on_request(samples, tmp_path):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "run"
    model = train(TINY.replace(epochs=1, pipeline="sequence"), annotations, images, run, verbose=0)
    assert "input pipeline: FaceSequence" in (run / "train.log").read_text()
    assert int(model.optimizer.iterations) == 2


def test_export_keeps_the_network_and_its_settings(samples, tmp_path):
    from click.testing import CliRunner

    from facegrid.cli import main

    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "run"
    train(TINY.replace(epochs=1), annotations, images, run, verbose=0)
    out = tmp_path / "exported" / "tiny.keras"
    result = CliRunner().invoke(main, ["export", str(run / "last.keras"), str(out), "--detect-size", "128"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < (run / "last.keras").stat().st_size  # no optimizer state
    assert load_config(out.with_suffix(".toml")).detect_size == 128
    detector = Detector.load(out)
    assert detector.input_size == 128
    assert len(detector.detect([images / "portraits" / "camera.png"])) == 1


def test_a_pyramid_trains_and_detects_with_its_own_settings(samples, tmp_path):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    config = TINY.replace(strides=(8, 16, 32), grid_size=0, epochs=1, detect_size=96)
    run = tmp_path / "pyramid"
    train(config, annotations, images, run, val_annotations=annotations, val_images=images, verbose=0)
    assert load_config(run / "config.toml") == config
    assert "val_ap" in (run / "train.log").read_text()
    model = keras.saving.load_model(run / "last.keras")
    assert type(model.loss).__name__ == "PyramidLoss"
    detector = Detector.load(run / "best.keras", score_threshold=0.0)
    assert detector.codec == config.codec and detector.input_size == 96
    (found,) = detector.detect([images / "portraits" / "grace_hopper.jpg"])
    assert found.size == (512, 600) and len(found.boxes)


def test_a_folder_holding_a_run_is_refused_without_resume(samples, tmp_path):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "run"
    train(TINY.replace(epochs=1), annotations, images, run, verbose=0)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(PathError) as info:
        train(TINY.replace(epochs=1, seed=1), annotations, images, run, verbose=0)
    assert str(info.value) == (
        f"{run}: holds a run already (config.toml, train.log, history.csv, state.json, last.keras, logs): "
        "pass --resume (resume=True) to continue it, or choose another folder"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing overwritten

    with pytest.raises(PathError) as info:
        train(TINY.replace(epochs=2, head_channels=16), annotations, images, run, resume=True, verbose=0)
    assert str(info.value) == (
        f"{run / 'config.toml'}: the run was started with head_channels = 8; it cannot be resumed with "
        "head_channels = 16 (leave head_channels as it was, or start a new run)"
    )
    with pytest.raises(PathError, match="nothing to resume: no finished epoch"):
        train(TINY, annotations, images, tmp_path / "new", resume=True, verbose=0)


def _constant_val_ap(self, epoch, logs=None):  # a validation AP that never improves after the first epoch
    logs["val_ap"] = 0.5


def test_early_stopping_resumes_where_it_was(samples, tmp_path, monkeypatch):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    monkeypatch.setattr(facegrid.train.ValidationAP, "on_epoch_end", _constant_val_ap)
    config = TINY.replace(epochs=6, early_stopping_patience=2)
    val = dict(val_annotations=annotations, val_images=images, verbose=0)
    whole = train(config, annotations, images, tmp_path / "whole", **val)
    assert json.loads((tmp_path / "whole" / "state.json").read_text()) == {
        "epoch": 3, "best_ap": 0.5, "early_stopping": {"wait": 2, "best": 0.5}
    }

    save = facegrid.train.Checkpoints.on_epoch_end

    def save_then_die(self, epoch, logs=None):  # stopped dead after the second epoch's checkpoint
        save(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(facegrid.train.Checkpoints, "on_epoch_end", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, annotations, images, tmp_path / "cut", **val)
    monkeypatch.setattr(facegrid.train.Checkpoints, "on_epoch_end", save)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["early_stopping"] == {"wait": 1, "best": 0.5}
    resumed = train(config, annotations, images, tmp_path / "cut", resume=True, **val)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == 3  # not 2 + a fresh patience
    assert int(resumed.optimizer.iterations) == int(whole.optimizer.iterations) == 6
    for a, b in zip(whole.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)

    again = train(config, annotations, images, tmp_path / "cut", resume=True, **val)  # a stopped run stays stopped
    assert int(again.optimizer.iterations) == 6
    assert "the run stopped early after epoch 3" in (tmp_path / "cut" / "train.log").read_text()


def test_validation_images_follow_the_bad_image_policy(samples, tmp_path):
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    shutil.copytree(images, tmp_path / "val")
    (tmp_path / "val" / "broken.jpg").write_bytes(b"not an image")
    val = tmp_path / "val.txt"
    val.write_text(annotations.read_text() + "broken.jpg\n1\n1 1 5 5 0 0 0 0 0 0 \n")
    config = TINY.replace(epochs=1)
    with pytest.raises(ImageError, match=f"{tmp_path / 'val' / 'broken.jpg'}: not a readable image"):
        train(config, annotations, images, tmp_path / "raise", val_annotations=val, val_images=tmp_path / "val",
              verbose=0)
    train(config.replace(on_bad_image="skip"), annotations, images, tmp_path / "skip", val_annotations=val,
          val_images=tmp_path / "val", verbose=0)
    log = (tmp_path / "skip" / "train.log").read_text()
    assert f"skipped {tmp_path / 'val' / 'broken.jpg'}: not a readable image" in log
    assert "epoch 1: val_ap" in log and (tmp_path / "skip" / "best.keras").is_file()


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
    result = CliRunner().invoke(main, [
        "train", "--annotations", samples / "faces_bbx_gt.txt", "--images", samples / "images",
        "--run", tmp_path / "run", "--config", tmp_path / "tiny.toml", "--backbone-weights", "imagenet",
    ])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    message = result.stderr
    assert "needs internet" in message and "Temporary failure in name resolution" in message
    assert "the default backbone_weights 'imagenet-bundled' with alpha 1.0 and backbone_style 'torchvision'" in message


def test_init_fine_tunes_from_the_bundled_model_with_its_settings(samples, tmp_path):
    from click.testing import CliRunner

    from facegrid.cli import main
    from facegrid.config import bundled_model_path

    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    run = tmp_path / "finetune"
    args = ["train", "--annotations", annotations, "--images", images, "--val-annotations", annotations,
            "--val-images", images, "--run", run, "--init", bundled_model_path(), "--epochs", "1",
            "--learning-rate", "1e-6", "--workers", "1"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    config = load_config(run / "config.toml")
    assert config.init == str(bundled_model_path()) and config.strides == (8, 16, 32)  # the model's own settings
    history = (run / "history.csv").read_text().splitlines()
    val_ap = float(history[-1].split(",")[history[0].split(",").index("val_ap")])
    assert val_ap > 0.9  # the bundled model finds each sample face from the first epoch on
    small = tmp_path / "small.toml"
    TINY.save(small)
    result = CliRunner().invoke(main, [str(a) for a in args[:-8]] + [
        "--run", str(tmp_path / "mismatch"), "--init", str(bundled_model_path()), "--config", str(small)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "its network is not the one these settings build" in result.output
