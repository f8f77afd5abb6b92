"""``facegrid train``: a training run from flags, a settings file and the defaults, in that order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from facegrid.cli.app import Number, fatal_input_errors, import_tensorflow, main, notice
from facegrid.core.config import (
    BACKBONE_STYLES,
    BUNDLED_IMAGENET,
    PIPELINES,
    POLICIES,
    STRATEGIES,
    TF_OPS_PIPELINE,
    Config,
)
from facegrid.train.panels import PANEL_IMAGES
from facegrid.wider.layout import ANNOTATIONS_FOLDER, GROUND_TRUTH_FOLDER


@main.command()
@click.option(
    "--annotations", type=click.Path(dir_okay=False, path_type=Path), help="Training annotations (WIDER FACE format)."
)
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the training annotation paths are relative to.",
)
@click.option(
    "--packed",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instead of --annotations and --images: a folder facegrid data pack wrote, read from its "
    "shards (pipeline puretf).",
)
@click.option(
    "--val-annotations",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Validation annotations: enables val AP, best.keras, early stopping and panels.",
)
@click.option(
    "--val-images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the validation annotation paths are relative to.",
)
@click.option(
    "--val-ground-truth",
    metavar="DIR|none",
    help=f"The official WIDER FACE {GROUND_TRUTH_FOLDER} folder: validation on WIDER val images also "
    "logs val_easy, val_medium and val_hard AP each epoch; 'none' for val_ap only  [default: "
    f"DATA/{GROUND_TRUTH_FOLDER} for --val-annotations DATA/{ANNOTATIONS_FOLDER}/FILE, where it "
    "exists and lists every validation image].",
)
@click.option(
    "--panels-every",
    type=click.IntRange(0),
    metavar="N",
    help=f"Every N epochs, draw the detections and faces of {PANEL_IMAGES} validation images into "
    f"RUN/panels/epoch_NNN.jpg; 0 for none  [default: {Config.panels_every}].",
)
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: config, log, curves, checkpoints, panels, TensorBoard logs.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of settings (see facegrid.core.config.Config).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --run from its last finished epoch; without it, a run folder in use is refused.",
)
@click.option("--epochs", type=click.IntRange(1), help=f"Epochs of the whole run [default: {Config.epochs}].")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    help=f"Images a step (the global batch under a strategy) [default: {Config.batch_size}].",
)
@click.option(
    "--learning-rate",
    type=Number(0, min_open=True),
    help=f"Peak AdamW learning rate, after warm-up, before cosine decay [default: {Config.learning_rate}].",
)
@click.option(
    "--input-size",
    type=click.IntRange(32),
    help=f"Side of the square training input, a multiple of 32 [default: {Config.input_size}].",
)
@click.option(
    "--grid-size",
    type=click.IntRange(1),
    help=f"Side of a single-grid model's output grid (0 in a settings file with strides) "
    f"[default: {Config.grid_size}].",
)
@click.option("--alpha", type=Number(0, min_open=True), help=f"MobileNetV2 width multiplier [default: {Config.alpha}].")
@click.option(
    "--backbone-weights",
    help=f"'{BUNDLED_IMAGENET}' (torchvision's ImageNet MobileNetV2, shipped with facegrid: alpha 1.0, or "
    "less taking its first channels, backbone style torchvision), 'none' (random), 'imagenet' (Keras' "
    "weights, downloaded: needs internet and --backbone-style keras), a .weights.h5 file or a facegrid "
    f".keras model's backbone [default: {Config.backbone_weights}].",
)
@click.option(
    "--backbone-style",
    type=click.Choice(BACKBONE_STYLES),
    help="MobileNetV2 as keras.applications builds it, or with torchvision's padding and batch-norm "
    f"epsilon (what torchvision's weights need) [default: {Config.backbone_style}].",
)
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False),
    help="Fine-tune: start from this facegrid .keras model's weights (the bundled one: "
    "src/facegrid/models/facegrid-wider.keras); without --config, its settings too.",
)
@click.option(
    "--pipeline",
    type=click.Choice(PIPELINES),
    help="Input pipeline: tf.data (faster), FaceSequence, or tf.data of TensorFlow ops only "
    f"(puretf: JPEGs only; what a tf.data service runs) [default: {Config.pipeline}].",
)
@click.option(
    "--data-service",
    metavar="HOST:PORT",
    help="Read the batches from the tf.data service dispatcher at HOST:PORT (facegrid data serve); "
    f"needs --pipeline {TF_OPS_PIPELINE} (or --packed).",
)
@click.option(
    "--data-service-wait",
    type=Number(0, min_open=True),
    metavar="SECONDS",
    help="With --data-service: how long to wait for its dispatcher to answer and a worker to register "
    f"before giving up [default: {Config.data_service_wait:g}].",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    help=f"Images decoded at once (tf.data) or batch-building workers (sequence) [default: {Config.workers}].",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    help=f"tf.distribute strategy: one device, all local devices (mirrored), or the cluster in "
    f"TF_CONFIG (multi-worker; the chief writes --run)  [default: {Config.strategy}].",
)
@click.option(
    "--cluster",
    metavar="HOST:PORT,...",
    help="Instead of TF_CONFIG: every worker of a multi-worker run, the same list on each machine; "
    "implies --strategy multi-worker and needs --task.",
)
@click.option(
    "--task",
    type=click.IntRange(0),
    metavar="N",
    help="This worker's place in --cluster, from 0 (worker 0 is the chief, which writes --run).",
)
@click.option(
    "--cluster-wait",
    type=Number(0, min_open=True),
    metavar="SECONDS",
    help=f"How long a multi-worker run waits for every worker of the cluster to start "
    f"[default: {Config.cluster_wait:g}].",
)
@click.option(
    "--on-bad-image",
    type=click.Choice(POLICIES),
    help="An unusable image, training or validation, stops training (raise, the default) "
    "or is left out, logged and counted (skip).",
)
@click.option("--seed", type=int, help=f"Seed of data order, augmentation and initialisation [default: {Config.seed}].")
@fatal_input_errors
def train(annotations, images, packed, val_annotations, val_images, run_dir, config_path, resume, **overrides) -> None:
    """Train a detector; flags override the --config file, which overrides the defaults."""
    if packed is not None:
        if annotations is not None or images is not None:
            raise click.UsageError("give --packed or --annotations with --images, not both")
        overrides["pipeline"], images = overrides["pipeline"] or TF_OPS_PIPELINE, packed
    elif annotations is None or images is None:
        raise click.UsageError("give --annotations and --images (or --packed)")
    if (val_annotations is None) != (val_images is None):
        raise click.UsageError("--val-annotations and --val-images go together")
    for option in ("val_ground_truth", "panels_every"):
        if val_annotations is None and overrides[option] is not None:
            raise click.UsageError(f"--{option.replace('_', '-')} needs a validation set (--val-annotations)")
    _cluster_from_flags(overrides, overrides.pop("cluster"), overrides.pop("task"))
    from facegrid.train.folder import check_run_folder, run_settings, writes_run_folder

    try:
        config = run_settings(run_dir, config_path, resume=resume, **overrides)
        if packed is not None:
            config.check_packed()
    except ValueError as error:  # the flags alone are at fault
        raise click.UsageError(str(error)) from None
    if overrides["data_service_wait"] is not None and not config.data_service:
        raise click.UsageError("--data-service-wait needs --data-service (a tf.data service to wait for)")

    try:
        writes_run_folder(config)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    check_run_folder(run_dir, config, resume)  # training checks again; here before Keras loads
    import_tensorflow()
    from facegrid.train.run import (
        train_detector as run_training,  # Keras loads only once the settings are sound
    )

    run_training(
        config,
        annotations,
        images,
        run_dir,
        val_annotations=val_annotations,
        val_images=val_images,
        resume=resume,
        notice=notice,
    )
    click.echo(f"run saved in {run_dir}")


def _cluster_from_flags(overrides: dict, cluster: str | None, task: int | None) -> None:
    """``--cluster`` and ``--task``, as this process's ``TF_CONFIG`` and the multi-worker strategy."""
    if cluster is None and task is None:
        return
    if cluster is None or task is None:
        raise click.UsageError("--cluster and --task go together")
    if os.environ.get("TF_CONFIG"):
        raise click.UsageError("give --cluster and --task, or TF_CONFIG, not both")
    if overrides["strategy"] not in (None, "multi-worker"):
        raise click.UsageError("--cluster trains under --strategy multi-worker")
    from facegrid.scale.cluster import cluster_config

    try:
        os.environ["TF_CONFIG"] = json.dumps(cluster_config(cluster.split(","), task))
    except ValueError as error:
        raise click.UsageError(f"--cluster/--task: {error}") from None
    overrides["strategy"] = "multi-worker"
