"""The facegrid command line: data check, show and stats, their output and exit status."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facegrid.cli import main
from facegrid.core.config import Config
from facegrid.core.resources import bundled_int8_model_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_check_official_train_file_counts(split_file):
    result = run("data", "check", split_file("train"), "--json")
    report = json.loads(result.output)
    assert report["images"] == 12_880
    assert report["faces"] == 159_420
    assert report["warnings"]["invalid_face"] == 2_399
    assert report["warnings"]["zero_size_box"] == 27
    assert report["warnings"]["no_face_dummy_row"] == 4
    assert report["errors"] == {}
    assert result.exit_code == 0


def test_check_val_with_images_reports_absent_ones(split_file, wider):
    result = run("data", "check", split_file("val"), "--images", wider / "WIDER_val" / "images", "--json")
    report = json.loads(result.output)
    assert report["images"] == 3_226
    assert report["faces"] == 39_708
    assert report["errors"] == {"missing_image": 3_226 - 394}  # only the 394 sample images are present
    example = report["examples"]["missing_image"][0]
    assert "WIDER_val/images/" in example and "wider_face_val_bbx_gt.txt:" in example
    assert result.exit_code == 1


def test_check_human_summary(samples):
    result = run("data", "check", samples / "faces_bbx_gt.txt", "--images", samples / "images")
    assert result.exit_code == 0
    assert "4 images, 3 face rows" in result.output
    assert "no_face_dummy_row: 1" in result.output


def test_check_finds_unreadable_image_and_box_outside(tmp_path):
    (tmp_path / "images" / "e").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "images" / "e" / "ok.jpg")
    (tmp_path / "images" / "e" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    annotations = tmp_path / "gt.txt"
    annotations.write_text(
        "e/ok.jpg\n2\n1 1 10 10 0 0 0 0 0 0 \n50 30 20 20 0 0 0 0 0 0 \ne/broken.jpg\n1\n1 1 5 5 0 0 0 0 0 0 \n"
    )
    result = run("data", "check", annotations, "--images", tmp_path / "images", "--json")
    report = json.loads(result.output)
    assert result.exit_code == 1
    assert report["errors"] == {"unreadable_image": 1}
    assert report["warnings"] == {"box_outside_image": 1}
    assert report["examples"]["box_outside_image"][0].startswith(f"{annotations}:4:")
    assert "broken.jpg" in report["examples"]["unreadable_image"][0]


MALFORMED = {
    "wrong_count": ("a.jpg\n3\n1 2 3 4 0 0 0 0 0 0 \n1 2 3 4 0 0 0 0 0 0 \nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \n", 5),
    "non_number_count": ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \nb.jpg\none\n1 2 3 4 0 0 0 0 0 0 \n", 5),
    "non_number_in_row": ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0 \n1 2 x 4 0 0 0 0 0 0 \n", 4),
    "truncated": ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \nb.jpg\n3\n1 2 3 4 0 0 0 0 0 0 \n", 7),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_check_malformed_file_exits_2_naming_file_and_line(tmp_path, case):
    text, line = MALFORMED[case]
    path = tmp_path / f"{case}.txt"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "facegrid.cli", "data", "check", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{path}:{line}:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_missing_annotation_file_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["data", "check", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2
    assert "nope.txt" in result.output


def test_show_bundled_samples(tmp_path):
    result = run("data", "show", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 4
    for png in pngs:
        with Image.open(png) as image:
            assert image.height == 448 + 22 and image.width > 448


def test_show_reports_and_skips_missing_image(tmp_path, samples):
    annotations = tmp_path / "gt.txt"
    annotations.write_text("portraits/astronaut.png\n1\n180 72 88 102 0 0 0 0 0 0 \ngone/missing.jpg\n0\n")
    result = run("data", "show", annotations, "--images", samples / "images", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "missing.jpg" in result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_stats_val_sample(wider, tmp_path):
    annotations = wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    plot = tmp_path / "stats.png"
    result = run("data", "stats", annotations, "--images", wider / "WIDER_val" / "images", "--out", plot, "--json")
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert stats["images"] == 394 and stats["face_rows"] == 5_289
    assert stats["sizes_estimated"] == 0
    shares = stats["representable"]
    assert 0 < shares["7x7"] < shares["14x14"] < shares["28x28"] <= 1
    assert shares["pyramid 8/16/32 @416"] > shares["7x7"]  # the bundled model's layout at its detection size
    assert plot.stat().st_size > 10_000


def test_show_draws_each_pyramid_level(samples, tmp_path):
    config = tmp_path / "pyramid.toml"
    config.write_text("input_size = 128\nstrides = [8, 16, 32]\ngrid_size = 0\n")
    result = run("data", "show", "--config", config, "--out", tmp_path / "out", "--count", "2")
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert len(pngs) == 2
    from PIL import Image

    with Image.open(pngs[0]) as panel:
        assert panel.width > 3 * 448  # the original and one input panel per level
    clash = run("data", "show", "--config", config, "--grid-size", "7", "--out", tmp_path / "out")
    assert clash.exit_code == 2 and "--config sets the input size" in clash.output


def refused(*args):
    """Run a command expected to refuse its input: exit status 2 and one line on stderr, which is returned."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def write_results(root, *keys):
    for key in keys:
        event, name = key.split("/")
        (root / event).mkdir(parents=True, exist_ok=True)
        (root / event / f"{name}.txt").write_text(f"{name}\n1\n1 1 10 10 0.9\n")


def test_evaluate_against_annotations_of_other_images(tmp_path, samples):
    write_results(tmp_path / "pred", "e/a", "e/b")
    line = refused("evaluate", tmp_path / "pred", "--annotations", samples / "faces_bbx_gt.txt")
    assert line == (f"error: {samples / 'faces_bbx_gt.txt'}: does not list 2 of the 2 predicted image(s): 'e/a', 'e/b'")


def test_evaluate_an_empty_submission_or_missing_ground_truth(tmp_path, samples):
    (tmp_path / "pred").mkdir()
    assert refused("evaluate", tmp_path / "pred", "--annotations", samples / "faces_bbx_gt.txt") == (
        f"error: {tmp_path / 'pred'}: holds no result files (<event>/<name>.txt)"
    )
    write_results(tmp_path / "pred", "e/a")
    assert refused("evaluate", tmp_path / "pred", "--ground-truth", tmp_path) == (
        f"error: official WIDER FACE ground truth file not found: {tmp_path / 'wider_face_val.mat'}"
    )


def test_check_names_the_images_folder_meant(wider):
    sample = wider / "wider_face_split" / "wider_face_val_sample_bbx_gt.txt"
    result = run("data", "check", sample, "--images", wider / "WIDER_val")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"none of the images is in {wider / 'WIDER_val'}; they are in {wider / 'WIDER_val' / 'images'}: "
        f"pass --images {wider / 'WIDER_val' / 'images'}"
    )
    report = json.loads(
        run("data", "check", sample, "--images", wider / "WIDER_val" / "images" / "0--Parade", "--json").output
    )
    assert report["no_image_found"] and report["nearby_images"] == str(wider / "WIDER_val" / "images")
    found = json.loads(run("data", "check", sample, "--images", wider / "WIDER_val" / "images", "--json").output)
    assert not found["no_image_found"] and found["nearby_images"] is None


def test_check_fails_a_box_wholly_outside_its_image_as_training_does(tmp_path):
    (tmp_path / "images" / "e").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "images" / "e" / "a.jpg")
    annotations = tmp_path / "gt.txt"
    annotations.write_text("e/a.jpg\n2\n1 1 10 10 0 0 0 0 0 0 \n70 5 10 10 0 0 0 0 0 0 \n")
    result = run("data", "check", annotations, "--images", tmp_path / "images", "--json")
    report = json.loads(result.output)
    assert result.exit_code == 1
    assert report["errors"] == {"box_wholly_outside_image": 1} and report["warnings"] == {}
    assert report["examples"]["box_wholly_outside_image"] == [
        f"{tmp_path / 'images' / 'e' / 'a.jpg'} ({annotations}:4): box [70, 5, 10, 10] lies wholly outside the "
        "60x40 image"
    ]


def test_train_on_a_folder_holding_none_of_the_images(tmp_path, samples):
    line = refused(
        "train",
        "--annotations",
        samples / "faces_bbx_gt.txt",
        "--images",
        samples,
        "--run",
        tmp_path / "run",
        "--on-bad-image",
        "skip",
        "--backbone-weights",
        "none",
    )
    assert line.startswith(f"error: {samples}: none of the 4 images {samples / 'faces_bbx_gt.txt'} lists can be used")
    assert line.endswith(f"; they are under {samples / 'images'}")


def train_with_ground_truth(samples, run, ground_truth):
    """``facegrid train`` on the samples, validated on them against ``ground_truth``: its one line of refusal."""
    annotations, images = samples / "faces_bbx_gt.txt", samples / "images"
    return refused(
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
        "--val-ground-truth",
        ground_truth,
    )


def test_train_refuses_a_ground_truth_folder_it_cannot_read_leaving_no_run(tmp_path, samples):
    (tmp_path / "empty").mkdir()
    assert train_with_ground_truth(samples, tmp_path / "run", tmp_path / "empty") == (
        f"error: official WIDER FACE ground truth file not found: {tmp_path / 'empty' / 'wider_face_val.mat'}"
    )
    assert train_with_ground_truth(samples, tmp_path / "run", tmp_path / "absent") == (
        f"error: {tmp_path / 'absent'}: no such folder (val_ground_truth names the official "
        "eval_tools/ground_truth folder, or 'none')"
    )
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_ground_truth_without_the_validation_images(tmp_path, samples, wider):
    ground_truth = wider / "eval_tools" / "ground_truth"
    assert train_with_ground_truth(samples, tmp_path / "run", ground_truth) == (
        f"error: {ground_truth}: does not list 4 of the 4 validation images, such as background/rocket.jpg: "
        "are they WIDER FACE validation images?"
    )
    assert not (tmp_path / "run").exists()


def test_detect_refuses_inputs_that_would_give_nothing_before_the_model_loads(tmp_path, samples):
    (tmp_path / "empty").mkdir()
    assert refused("detect", tmp_path / "empty") == (
        f"error: {tmp_path / 'empty'}: no image or video files "
        "(.jpg .jpeg .png .bmp .webp .tif .tiff .mp4 .avi .mov .mkv .webm .m4v)"
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "clip.txt").write_text("not a picture")
    assert refused("detect", tmp_path / "notes", "--model", tmp_path / "absent.keras").endswith(
        "only 1 other file(s) such as clip.txt"
    )
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    assert refused("detect", tmp_path / "videos", "--model", tmp_path / "absent.keras") == (
        f"error: {tmp_path / 'videos' / 'clip.mp4'}: not a video OpenCV can open"
    )
    one = samples / "images" / "background" / "rocket.jpg"
    assert refused("detect", one, "--wider-submission", tmp_path / "sub") == (
        f"error: {one}: given as a file, so its event is unknown: a WIDER result file needs the image found "
        "under a folder"
    )
    events = samples / "images" / "portraits"
    assert refused("detect", events, "--wider-submission", tmp_path / "sub").endswith(
        f"give the folder that holds the event folders ({samples / 'images'})"
    )
    assert not (tmp_path / "sub").exists()


def test_stats_plot_of_an_unknown_format(tmp_path, samples):
    line = refused("data", "stats", samples / "faces_bbx_gt.txt", "--out", tmp_path / "stats.xyz")
    assert line.startswith(f"error: {tmp_path / 'stats.xyz'}: not a figure file name: give one of the suffixes ")


def test_an_error_line_stays_one_line_whatever_the_name(tmp_path):
    odd = tmp_path / "two\nlines \udcff"
    odd.mkdir()
    assert refused("detect", odd) == (
        f"error: {tmp_path}/two\\nlines \\udcff: no image or video files "
        "(.jpg .jpeg .png .bmp .webp .tif .tiff .mp4 .avi .mov .mkv .webm .m4v)"
    )


def test_numbers_must_be_finite(tmp_path, samples):
    write_results(tmp_path / "pred", "e/a")
    for args in (
        ["evaluate", tmp_path / "pred", "--annotations", samples / "faces_bbx_gt.txt", "--iou", "nan"],
        ["data", "stats", samples / "faces_bbx_gt.txt", "--min-size", "inf"],
    ):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 2 and "is not a finite number" in result.stderr


def without_tensorflow(*args):
    """Run the command in a fresh interpreter: its exit status, stderr, and whether TensorFlow was imported."""
    code = (
        "import sys\nfrom facegrid.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as end:\n"
        "    print(end.code, 'tensorflow' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
    status, imported = proc.stdout.split()
    return int(status), proc.stderr, imported == "True"


def test_train_refuses_a_used_run_folder_or_a_changed_model_before_tensorflow_loads(tmp_path, samples):
    data = ["train", "--annotations", samples / "faces_bbx_gt.txt", "--images", samples / "images"]
    run = tmp_path / "run"
    run.mkdir()
    Config(input_size=64, grid_size=4).save(run / "config.toml")
    assert without_tensorflow(*data, "--run", run) == (
        2,
        f"error: {run}: holds a run stopped before its first epoch ended (config.toml): pass --resume "
        "to start it again with its settings, or choose another folder\n",
        False,
    )
    (run / "state.json").write_text('{"epoch": 1, "best_ap": -1.0}\n')
    assert without_tensorflow(*data, "--run", run) == (
        2,
        f"error: {run}: holds a run already (config.toml, state.json): pass --resume to continue "
        "it, or choose another folder\n",
        False,
    )
    assert without_tensorflow(*data, "--run", run, "--resume", "--grid-size", "2") == (
        2,
        f"error: {run / 'config.toml'}: the run was started with grid_size = 4; it cannot be resumed with "
        "grid_size = 2 (leave grid_size as it was, or start a new run)\n",
        False,
    )
    bad = tmp_path / "my.toml"
    bad.write_text("grid_size = 5\n")
    status, stderr, imported = without_tensorflow(*data, "--run", tmp_path / "new", "--config", bad)
    assert (status, imported) == (2, False)
    assert stderr.startswith(f"error: {bad}: grid_size 5 does not fit input_size 224") and stderr.count("\n") == 1
    status, stderr, imported = without_tensorflow(*data, "--run", tmp_path / "new", "--val-images", samples)
    assert (status, imported) == (2, False) and "--val-annotations and --val-images go together" in stderr
    status, stderr, imported = without_tensorflow(*data, "--run", tmp_path / "new", "--panels-every", "2")
    assert (status, imported) == (2, False) and "--panels-every needs a validation set (--val-annotations)" in stderr
    assert not (tmp_path / "new").exists()


def test_a_wider_alpha_alone_says_to_start_from_random_weights(tmp_path, samples):
    status, stderr, imported = without_tensorflow(
        "train",
        "--annotations",
        samples / "faces_bbx_gt.txt",
        "--images",
        samples / "images",
        "--run",
        tmp_path / "run",
        "--alpha",
        "1.4",
    )
    assert (status, imported, stderr.count("\n")) == (2, False, 1)
    assert stderr.startswith(
        "error: backbone_weights 'imagenet-bundled' (the default: the ImageNet backbone shipped "
        "with facegrid) fits alpha 1.0 or less with backbone_style 'torchvision' only, not alpha 1.4: "
        "for alpha 1.4, start from random weights with backbone_weights 'none'; "
    )


def test_tensorflow_start_up_lines_stay_off_the_terminal_without_v(samples):
    photo = samples / "images" / "portraits" / "astronaut.png"
    proc = subprocess.run(
        [sys.executable, "-m", "facegrid.cli", "detect", str(photo)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.startswith(f"{photo}: ")
    assert proc.stderr.startswith("1 image(s): 1 face(s) in ") and proc.stderr.count("\n") == 1, proc.stderr


def test_a_usage_mistake_is_one_line_naming_the_help():
    for args, message in (
        (
            ["detect", "--threshold", "abc", "x.jpg"],
            "error: Invalid value for '--threshold': 'abc' is not a valid number.",
        ),
        (["nosuch"], "error: No such command 'nosuch'."),
        (["data", "show", "--count", "0"], "error: Invalid value for '--count'"),
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, args
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr
        assert "--help'" in result.stderr and "Usage:" not in result.output
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0


def tiny_wider(wider, root):
    """A WIDER FACE folder of 10 validation images (linked, not copied) and the real ground truth."""
    for event, count in (("0--Parade", 4), ("13--Interview", 3), ("19--Couple", 3)):
        (root / "WIDER_val" / "images" / event).mkdir(parents=True)
        for image in sorted((wider / "WIDER_val" / "images" / event).glob("*.jpg"))[:count]:
            (root / "WIDER_val" / "images" / event / image.name).symlink_to(image)
    (root / "eval_tools").mkdir()
    (root / "eval_tools" / "ground_truth").symlink_to(wider / "eval_tools" / "ground_truth")
    return root


def test_val_scores_what_detect_and_evaluate_score_on_the_same_images(wider, tmp_path, caplog):
    data = tiny_wider(wider, tmp_path / "wider")
    plot = tmp_path / "pr.png"
    val = run("val", "src/facegrid/models/facegrid-wider.keras", "--data", data, "--json", "--plot", plot)
    assert val.exit_code == 0, val.output
    report = json.loads(val.stdout)
    assert report["protocol"] == "wider" and report["images"] == 10
    assert sorted(report["ap"]) == ["easy", "hard", "medium"] and all(0 < ap <= 1 for ap in report["ap"].values())
    assert plot.stat().st_size > 0
    assert val.stderr.startswith("10 image(s): ") and val.stderr.rstrip().endswith(" images/s")

    keras_model = ["--model", "src/facegrid/models/facegrid-wider.keras"]  # detect's default is the int8 export
    detected = run(
        "detect",
        data / "WIDER_val" / "images",
        *keras_model,
        "--wider-submission",
        tmp_path / "pred",
        "--batch-size",
        1,
    )  # val's default: each image at its own input
    assert detected.exit_code == 0, detected.output
    scored = run("evaluate", tmp_path / "pred", "--ground-truth", data / "eval_tools" / "ground_truth", "--json")
    assert json.loads(scored.stdout) == report  # the same images, boxes and AP, to the last bit

    batched = run("detect", data / "WIDER_val" / "images", *keras_model, "--wider-submission", tmp_path / "batched")
    assert batched.exit_code == 0, batched.output
    scored = run("evaluate", tmp_path / "batched", "--ground-truth", data / "eval_tools" / "ground_truth", "--json")
    explicit = run(
        "val",
        "src/facegrid/models/facegrid-wider.keras",
        "--images",
        data / "WIDER_val" / "images",
        "--ground-truth",
        data / "eval_tools" / "ground_truth",
        "--batch-size",
        8,
    )  # detect's default
    ap = json.loads(scored.stdout)["ap"]
    assert explicit.stdout.splitlines() == [f"{name:>8}: AP {ap[name]:.4f}" for name in ("easy", "medium", "hard")]

    with caplog.at_level("INFO", logger="facegrid"):
        default = run("val", "--data", data, "--json")  # no MODEL: the bundled one, int8 where LiteRT is
    assert default.exit_code == 0, default.output
    assert f"{bundled_int8_model_path()}: LiteRT, detecting at 416 pixels (longer side)" in caplog.text
    assert json.loads(default.stdout)["images"] == 10


def test_val_refuses_a_folder_that_is_not_wider_before_the_model_loads(tmp_path, samples):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not loaded")
    assert refused("val", model).startswith("error: give --data, or both --images and --ground-truth")
    assert refused("val", model, "--data", tmp_path) == (
        f"error: {tmp_path / 'WIDER_val' / 'images'}: no such folder: is {tmp_path} a WIDER FACE folder "
        "(with WIDER_val/images)?"
    )


def test_val_given_a_folder_as_its_model_says_what_it_takes(wider, tmp_path):
    assert refused("val", tmp_path, "--data", wider) == (
        f"error: {tmp_path}: a folder that is no SavedModel (no saved_model.pb in it), and not a .keras model file"
    )
