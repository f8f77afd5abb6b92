"""Training: the whole run in one place, from config to checkpoints.

A run folder holds everything needed to inspect or continue it::

    RUN/
      config.toml     the resolved configuration (also printed in the log)
      train.log       the log
      history.csv     loss and validation AP per epoch (numbered from 1, as the log numbers them):
                      val_ap, and val_easy, val_medium, val_hard when scored on WIDER val
                      against its official ground truth (see ValidationAP)
      results.png     the same as curves, redrawn after every epoch
      panels/         epoch_005.jpg, ...: detections and faces of a few validation images
                      every ``panels_every`` epochs
      last.keras      model + optimizer state after the last finished epoch
      best.keras      the model with the best validation AP so far
      state.json      last finished epoch, best AP and early stopping's count
                      (what --resume reads)
      logs/           TensorBoard

A new run refuses a folder that holds a run already (any of these files):
continue that run with ``resume``, or choose another folder. A resumed run
refuses settings that would change its network, loss or optimizer
(:data:`facegrid.train.folder.FIXED_SETTINGS`), and picks up early stopping's count of
epochs without a better AP where it was, so it stops where an uninterrupted
run stops.

Checkpoints are written to a temporary file and renamed into place, so a run
killed at any moment leaves the previous complete checkpoint, never half a file.

``Config.strategy`` picks the ``tf.distribute`` strategy, and
:class:`~facegrid.train.loop.TrainingLoop` trains under it: the model is
built, compiled or loaded in its scope, each global batch is split evenly
between the replicas (:func:`~facegrid.train.loop.replica_batches`), and
every replica's loss is taken over the positive cells of the whole global
batch, so any number of replicas optimises what one device does. Under
``"multi-worker"`` (the cluster in ``TF_CONFIG``, see
:mod:`facegrid.scale.cluster`) every worker runs this same function on the
same global batches, keeping its replicas' share of each, so data order and
resume do not depend on the workers; only the chief writes the run folder
(:func:`facegrid.train.folder.writes_run_folder`), the others a temporary
folder removed at the end. A resumed multi-worker run reads the run folder
on every worker, so the folder must be shared between them (or copied to
each before resuming).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import tempfile
import urllib.error
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facegrid.core.config import BUNDLED_IMAGENET, Config
from facegrid.core.errors import PathError, SettingsError, TrainingError, reason_of
from facegrid.core.files import write_atomically, write_text_atomically
from facegrid.core.paths import image_path
from facegrid.data.images import read_image
from facegrid.data.screening import BadImages
from facegrid.data.sequence import FaceSequence
from facegrid.data.tf.choose import pipeline_for
from facegrid.data.tf.puretf import PackedPipeline
from facegrid.data.tf.split import even_parts
from facegrid.eval.ap import average_precision
from facegrid.eval.validate import detect_at_floor, wider_scores
from facegrid.infer.detector import Detections, Detector
from facegrid.model.loss import loss_for, term_metrics
from facegrid.model.network import build_detector, load_detector
from facegrid.scale.cluster import read_tf_config, wait_for_cluster
from facegrid.scale.preflight import wait_for_workers
from facegrid.scale.service import SERVICE_FAILURES, distribute, service_failure, shared_epoch
from facegrid.train.curves import TrainingCurves
from facegrid.train.folder import check_run_folder, writes_run_folder
from facegrid.train.loop import TrainingLoop, agreed_number, replica_batches
from facegrid.train.panels import PANEL_IMAGES, PanelImage, detections_panel
from facegrid.wider.annotations import read_annotations
from facegrid.wider.ground_truth import (
    SETTINGS,
    WiderGroundTruth,
    load_wider_ground_truth,
    refuse_unlisted,
)
from facegrid.wider.index import FaceFilter, Index
from facegrid.wider.layout import GROUND_TRUTH_FOLDER, ground_truth_beside

log = logging.getLogger(__name__)


class ValidationAP(keras.callbacks.Callback):
    """Adds ``val_ap`` (AP at IoU 0.5 over the validation images) to each epoch's logs, and WIDER's three APs.

    The images go through :class:`~facegrid.infer.detector.Detector` as at detection
    time (at the detection size, decoded at each image's original size) down
    to the submission floor (:func:`~facegrid.eval.validate.detect_at_floor`),
    so the whole precision-recall curve counts; faces the filter leaves out
    are ignore regions. An image that cannot be read stops training under
    ``on_bad_image = "raise"``; under ``"skip"`` it is logged once, counted
    in :attr:`bad_images` and left out of the AP, faces and all.

    With ``ground_truth`` (the official WIDER FACE validation ground truth,
    see :func:`validation_ground_truth`) the same detections are also scored by
    :func:`~facegrid.eval.validate.wider_scores`, logged as ``val_easy``,
    ``val_medium`` and ``val_hard``: on the validation images read, as
    ``facegrid val`` scores the images present, and with each image's boxes
    as its result file would hold them: with ``batch_size`` 1, an epoch's
    numbers are those ``facegrid val`` reports for that epoch's model (larger
    batches pad their images to the largest, as ``val --batch-size`` does,
    and their order is the annotations'). ``val_ap`` still
    chooses best.keras and drives early stopping: every run with a validation
    set has it, so resumed and plain runs compare alike, and it counts the
    faces the training filter keeps, the ones the model is taught to find.

    Every ``config.panels_every`` epochs, with ``panels``, the detections of
    :data:`~facegrid.train.panels.PANEL_IMAGES` validation images drawn from
    ``config.seed`` (the same ones every epoch) are drawn over their faces into
    ``panels/epoch_NNN.jpg``, written atomically, from the detections scored.

    With ``replicas`` above 1 the images go through a single-device copy of
    the model instead, its weights refreshed each epoch: a distributed model's
    ``predict_on_batch`` runs the whole batch on every replica and
    concatenates the results.
    """

    def __init__(
        self,
        index: Index,
        images: str | os.PathLike,
        config: Config,
        face_filter: FaceFilter,
        replicas: int = 1,
        ground_truth: WiderGroundTruth | None = None,
        panels: Path | None = None,
    ):
        super().__init__()
        self.index = index
        self.face_filter = face_filter
        self.config = config
        self.paths = [image_path(images, p) for p in index.paths.tolist()]
        self.bad_images = BadImages()
        self.replicas = replicas
        self.ground_truth = ground_truth
        self.panels = panels
        chosen = np.random.default_rng(config.seed).choice(len(index), min(PANEL_IMAGES, len(index)), replace=False)
        self.panel_images = sorted(chosen.tolist())
        self._copy = None

    def _network(self) -> keras.Model:
        if self.replicas == 1:
            return self.model
        if self._copy is None:
            self._copy = keras.models.clone_model(self.model)  # callbacks run outside the strategy's scope
        self._copy.set_weights(self.model.get_weights())
        return self._copy

    def metrics(self, found: list[Detections | None]) -> dict[str, float]:
        """``val_ap`` (and with the ground truth ``val_easy``, ``val_medium``, ``val_hard``) of the detections.

        Args:
            found: per validation image, in the index's order, its detections,
                or None for an image that could not be read (left out).
        """
        read = [image for image, d in enumerate(found) if d is not None]
        index = self.index if len(read) == len(found) else self.index.take(read)
        predictions = {key: (found[i].boxes, found[i].scores) for key, i in zip(index.paths.tolist(), read)}
        metrics = {"val_ap": average_precision(predictions, index, face_filter=self.face_filter).ap}
        if self.ground_truth is not None:
            wider = wider_scores(self.index.paths.tolist(), found, self.ground_truth).ap
            metrics.update({f"val_{setting}": wider[setting] for setting in SETTINGS})
        return metrics

    def on_epoch_end(self, epoch, logs=None):
        detector = Detector.for_config(self._network(), self.config)
        skip = self.bad_images.add if self.config.on_bad_image == "skip" else None
        found = detect_at_floor(detector, self.paths, self.config.batch_size, on_unreadable=skip)
        metrics = self.metrics(found)
        if logs is not None:
            logs.update(metrics)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        every = self.config.panels_every
        if self.panels is not None and every and (epoch + 1) % every == 0:
            self._write_panel(epoch + 1, found)

    def _write_panel(self, epoch: int, found: list[Detections | None]) -> None:
        """``panels/epoch_NNN.jpg``: the chosen images, the faces that count, detections from ``score_threshold``."""
        threshold = self.config.score_threshold
        keep = self.face_filter.mask(self.index)
        shown = []
        for i in self.panel_images:
            faces = self.index.image_boxes(i)[keep[self.index.offsets[i] : self.index.offsets[i + 1]]]
            name = Path(str(self.index.paths[i])).stem
            if found[i] is None:
                shown.append(PanelImage(None, faces, np.zeros((0, 4)), np.zeros(0), f"not readable: {name}"))
                continue
            above = found[i].scores >= threshold
            shown.append(
                PanelImage(
                    read_image(self.paths[i]),
                    faces,
                    found[i].boxes[above],
                    found[i].scores[above],
                    f"{len(faces)} face(s), {int(above.sum())} found: {name}",
                )
            )
        panel = detections_panel(
            shown,
            f"epoch {epoch}: detections scoring {threshold:g} or more (green, with their scores) and faces (blue)",
        )
        self.panels.mkdir(parents=True, exist_ok=True)
        target = self.panels / f"epoch_{epoch:03d}.jpg"
        write_atomically(target, lambda tmp: panel.save(tmp, format="JPEG", quality=90))
        log.info("epoch %d: drew %d validation image(s) into %s", epoch, len(shown), target)


def validation_ground_truth(config: Config, index: Index) -> tuple[WiderGroundTruth | None, str]:
    """The official ground truth ``index``'s images are scored against (None: ``val_ap`` only), and why, for the log.

    ``config.val_ground_truth`` names the folder; empty, it is where the
    official release lays it out beside the validation annotations
    (:func:`facegrid.wider.layout.ground_truth_beside`:
    ``widerface/wider_face_split/*.txt`` looks in
    ``widerface/eval_tools/ground_truth``). The ground truth must list every
    validation image (they are WIDER val images), while images it lists
    beyond them are not scored, as ``facegrid val`` scores the images
    present. A folder looked for that is absent, or that does not list the
    images, means ``val_ap`` only.

    Raises:
        facegrid.core.errors.PathError: the folder named is absent, cannot be
            read as the official ground truth, or does not list every
            validation image.
        FileNotFoundError: a ground truth file is missing from a folder used.
    """
    named = config.val_ground_truth
    if named == "none":
        return None, "val_ground_truth 'none': val_ap only"
    if named:
        folder = Path(named)
        if not folder.is_dir():
            raise PathError(
                folder, f"no such folder (val_ground_truth names the official {GROUND_TRUTH_FOLDER} folder, or 'none')"
            )
    elif index.source:
        folder = ground_truth_beside(index.source)
        if not folder.is_dir():
            return None, f"no official ground truth at {folder}: val_ap only (val_ground_truth names one)"
    else:
        return None, "validation annotations from no file, so no official ground truth beside them: val_ap only"
    truth = load_wider_ground_truth(folder)
    try:
        refuse_unlisted(truth, index.paths.tolist(), "validation images")
    except PathError as error:
        if named:
            raise
        return None, f"{folder} {error.reason} val_ap only"
    return truth, (
        f"WIDER easy/medium/hard AP (val_easy, val_medium, val_hard) each epoch on the {len(index):,} "
        f"validation images, against the {len(truth.keys):,} of {folder}"
    )


class ReportBadImages(keras.callbacks.Callback):
    """Logs, at the end of each epoch, how many images have been left out as unusable."""

    def __init__(self, bad_images: BadImages):
        super().__init__()
        self.bad_images = bad_images

    def on_epoch_end(self, epoch, logs=None):
        if len(self.bad_images):
            log.warning(
                "epoch %d: %d image(s) left out so far as unusable (each logged when met)",
                epoch + 1,
                len(self.bad_images),
            )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on ``val_ap``, starting from a resumed run's count and best AP.

    Keras starts its count of epochs without improvement (``wait``) and its
    best value afresh in every ``fit``, so a resumed run would wait another
    full patience; :attr:`state` is saved with each checkpoint and handed back
    here on resume.
    """

    def __init__(self, patience: int, state: dict | None = None):
        super().__init__(monitor="val_ap", mode="max", patience=patience)
        self.resumed = state or {"wait": 0, "best": None}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait, self.best = int(self.resumed["wait"]), self.resumed["best"]

    @property
    def state(self) -> dict:
        """What a resumed run needs: the epochs since the best ``val_ap``, and that AP (None before the first)."""
        return {"wait": self.wait, "best": None if self.best is None else float(self.best)}

    @property
    def stopped(self) -> bool:
        """Whether the patience is spent: the run this state comes from has stopped."""
        return int(self.resumed["wait"]) >= self.patience


class Checkpoints(keras.callbacks.Callback):
    """Writes last.keras every epoch and best.keras on a new best ``val_ap``, atomically, and state.json.

    ``early_stopping`` must come before this callback, so that the state
    saved holds its count after the epoch.
    """

    def __init__(self, run_dir: Path, best_ap: float, early_stopping: ResumableEarlyStopping | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.best_ap = best_ap
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        last = self.run_dir / "last.keras"
        write_atomically(last, self.model.save)
        ap = logs.get("val_ap")
        if ap is not None and ap > self.best_ap:
            self.best_ap = ap
            write_atomically(self.run_dir / "best.keras", lambda tmp: shutil.copyfile(last, tmp))  # the same model
            log.info("epoch %d: new best val_ap %.4f, saved best.keras", epoch + 1, ap)
        state = {"epoch": epoch + 1, "best_ap": self.best_ap}
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state
        write_text_atomically(self.run_dir / "state.json", json.dumps(state) + "\n")


def _log_file(run_dir: Path) -> logging.Handler:
    """``train.log`` in the run folder, receiving facegrid's log from now on."""
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("facegrid").addHandler(handler)
    return handler


def _compile(model: keras.Model, config: Config, steps_per_epoch: int) -> None:
    warmup = config.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.01 if warmup else config.learning_rate,
        decay_steps=max(config.epochs * steps_per_epoch - warmup, 1),
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    loss = loss_for(config)
    model.compile(optimizer=optimizer, loss=loss, metrics=term_metrics(loss))


def train_detector(
    config: Config,
    train_annotations: str | os.PathLike | Index | None,
    train_images: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    val_annotations: str | os.PathLike | Index | None = None,
    val_images: str | os.PathLike | None = None,
    resume: bool = False,
    verbose: int | str = "auto",
    notice: Callable[[str], None] = log.info,
) -> keras.Model:
    """Train a detector, writing the run folder described in this module's docstring.

    Args:
        config: every setting of model, data and optimisation.
        train_annotations, train_images: the training set; or None and a
            folder ``facegrid data pack`` wrote, read from its shards by
            :class:`~facegrid.data.tf.puretf.PackedPipeline` (``pipeline = "puretf"``).
        run_dir: the run folder (created); one that holds a run already is
            refused unless ``resume``. Under ``strategy = "multi-worker"``
            only the chief writes it.
        val_annotations, val_images: the validation set; without it there is no
            validation AP, no best.keras, no early stopping and no panels.
            WIDER val images with the official ground truth at hand are scored
            in WIDER's easy, medium and hard settings too (see
            :func:`validation_ground_truth`).
        resume: continue the run in ``run_dir`` from its last finished epoch,
            with its optimizer state, data order and early stopping count
            (a run stopped before its first epoch ended starts again).
        verbose: Keras' progress display (1 bar, 2 one line per epoch, 0 none).
        notice: called with a line saying what training waits for, when
            ``config.data_service`` is not ready at once (see
            :func:`facegrid.scale.service.distribute`).

    Returns:
        The trained model (weights of the last epoch).

    Raises:
        facegrid.core.errors.PathError: ``run_dir`` holds a run and ``resume`` is
            not set; or with ``resume``, it holds no run's settings, or
            ``config`` changes a setting the run fixed (see :mod:`facegrid.train.folder`);
            or the ground truth ``config.val_ground_truth`` names cannot be used.
        ConnectionError: Keras' ImageNet weights cannot be downloaded.
        facegrid.core.errors.ServiceError: the tf.data service did not answer, or
            had no worker, within ``config.data_service_wait`` seconds; or
            reading from it failed while training (see :mod:`facegrid.scale.service`).
    """
    strategy = distribution(config, notice)  # first: MultiWorkerMirroredStrategy must come before any TensorFlow op
    run_dir = Path(run_dir)
    check_run_folder(run_dir, config, resume)
    facegrid_log = logging.getLogger("facegrid")
    held = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)  # until train.log exists
    facegrid_log.addHandler(held)
    facegrid_log.setLevel(logging.INFO)
    handlers = [held]
    writes = writes_run_folder(config)
    out_dir = run_dir if writes else Path(tempfile.mkdtemp(prefix="facegrid-worker-"))
    try:
        # every input is read and checked before the run folder is made, so that a refusal leaves nothing there
        if config.data_service:
            wait_for_workers(config.data_service, config.data_service_wait, notice)
        keras.utils.set_random_seed(config.seed)
        face_filter = FaceFilter(min_size=config.min_face_size)
        train_data = pipeline_for(config, train_annotations, train_images, face_filter)
        local = _local_replicas(strategy)
        if isinstance(train_data, PackedPipeline) and local < strategy.num_replicas_in_sync:
            if config.data_service:
                raise SettingsError(
                    train_data.packed.folder,
                    "several workers read a packed set by shard, each its own, not through the tf.data service; "
                    "the service serves several workers from an image folder",
                )
            _shard_shares(train_data, strategy.num_replicas_in_sync // local, local)
        validation = None
        if val_annotations is not None:
            val_index = val_annotations if isinstance(val_annotations, Index) else read_annotations(val_annotations)
            validation = (val_index, val_images, *validation_ground_truth(config, val_index))
        init_weights = load_detector(config.init).get_weights() if config.init else None
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.toml")  # first, so that a run stopped at once can be resumed
        handlers.append(_log_file(out_dir))
        held.setTarget(handlers[-1])
        held.flush()
        facegrid_log.removeHandler(held)  # from now on the file is written to directly, each line once
        finished = (run_dir / "state.json").is_file()
        if resume and not finished:
            log.info("%s: no epoch of the run finished; starting it again with its settings", run_dir)
        return _train(
            config,
            strategy,
            train_data,
            face_filter,
            run_dir,
            out_dir,
            validation,
            resume and finished,
            init_weights,
            verbose,
            notice,
        )
    finally:
        for handler in handlers:
            facegrid_log.removeHandler(handler)
            handler.close()
        if not writes:
            shutil.rmtree(out_dir, ignore_errors=True)


def _epoch_batches(config, strategy, train_data, initial_epoch, notice):
    """``(batches, steps, finish)``: each epoch's distributed batches, the global batches an epoch, and the cleanup.

    Epoch ``e`` is served in FaceSequence's order of epoch ``e + 1`` (see
    :class:`~facegrid.data.sequence.FaceSequence`) by every pipeline, so they
    all train on the same batches. Under a multi-worker strategy every
    worker reads the same global batches and keeps its replicas' even share
    of each (:func:`~facegrid.train.loop.replica_batches`), so each step's
    images are those of one device's step, and data order and resume do not
    depend on the workers; a packed set is read by shard instead
    (:func:`_packed_by_file`).
    """
    steps, replicas = len(train_data), strategy.num_replicas_in_sync
    local = _local_replicas(strategy)
    if isinstance(train_data, PackedPipeline) and replicas > local:
        return _packed_by_file(config, strategy, train_data, initial_epoch, replicas // local, local)
    short = (len(train_data.source) - 1) % config.batch_size + 1 < replicas  # an epoch's last batch
    if short:
        log.warning(
            "each epoch's last batch holds fewer images than the %d replicas: it is left out of training", replicas
        )
    if isinstance(train_data, FaceSequence):
        log.info(
            "input pipeline: FaceSequence (keras.utils.PyDataset), %d images in %d batches, %d %s worker(s)",
            len(train_data.index),
            steps,
            config.workers,
            "process" if config.use_multiprocessing else "thread",
        )
        epochs = SequenceEpochs(train_data, strategy)
        return epochs, steps - short, epochs.close
    log.info(
        "input pipeline: tf.data (%s), %d images in %d batches, %d images decoded at once",
        type(train_data).__name__,
        len(train_data.index),
        steps,
        config.workers,
    )
    if config.data_service and replicas > local:
        return _served_to_workers(config, strategy, train_data, initial_epoch, steps - short, replicas // local)
    data = train_data.dataset(first_epoch=initial_epoch + 1, epochs=config.epochs - initial_epoch)
    if config.data_service:
        data = distribute(data, config.data_service, wait=config.data_service_wait, notice=notice)
    iterator = iter(replica_batches(strategy, data))
    return (lambda epoch: iterator), steps - short, lambda: None


def _local_replicas(strategy: tf.distribute.Strategy) -> int:
    """This worker's replicas (all of them but under a multi-worker strategy)."""
    if strategy.num_replicas_in_sync == 1:
        return 1
    return len(strategy.extended.worker_devices)


def _served_to_workers(config, strategy, pipeline, initial_epoch, steps, workers):
    """Each epoch one tf.data service job that all ``workers`` read, each its slices of the same global batches.

    The service's workers build each global batch once, whole, as one
    device's step would have it, and cut it between the training workers
    (:func:`~facegrid.scale.service.shared_epoch`); every batch of an epoch
    comes exactly once, in the order the service's workers finish them.
    The jobs' names are drawn anew at each start, agreed by all workers,
    so a restarted run never reads a job its killed start left half read.
    """
    number = agreed_number(strategy)
    task = strategy.cluster_resolver.task_id
    local = strategy.num_replicas_in_sync // workers
    log.info(
        "input pipeline: one tf.data service job an epoch (facegrid-%x-epoch-N) shared by %d workers, %d steps",
        number,
        workers,
        steps,
    )
    epochs = [
        shared_epoch(
            pipeline.batch_of(epoch), steps, config.data_service, f"facegrid-{number:x}-epoch-{epoch}", task, workers
        )
        for epoch in range(initial_epoch + 1, config.epochs + 1)
    ]
    served = epochs[0]
    for more in epochs[1:]:
        served = served.concatenate(more)

    def this_workers(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return served.flat_map(lambda images, targets: even_parts(images, targets, local)).prefetch(tf.data.AUTOTUNE)

    iterator = iter(strategy.distribute_datasets_from_function(this_workers))
    return (lambda epoch: iterator), steps, lambda: None


def _shard_shares(packed: PackedPipeline, readers: int, local: int) -> list[int]:
    """How many images each of ``readers`` workers' shards of ``packed`` hold (worker k: shards k modulo ``readers``).

    Raises:
        facegrid.core.errors.SettingsError: fewer shards than workers, or a
            worker's shards hold fewer images than its ``local`` replicas
            take in one device's steps an epoch (one image each a step).
    """
    folder = packed.packed.folder
    shards = len(packed.packed.files)
    if shards < readers:
        raise SettingsError(folder, f"{shards} shard(s) for {readers} workers: pack it into {readers} or more")
    listed = packed.packed.manifest.shards
    images = [sum(shard.examples for shard in listed[k::readers]) for k in range(readers)]
    steps = len(packed)
    if min(images) < steps * local:
        raise SettingsError(
            folder,
            f"a worker's shards hold {min(images)} images, fewer than its {local} replica(s) need for the "
            f"{steps} steps of an epoch (one image each a step): pack it into a multiple of {readers} shards "
            "of even size, or raise batch_size",
        )
    return images


def _packed_by_file(config, strategy, packed, initial_epoch, readers, local):
    """A packed set split by shard between ``readers`` workers of ``local`` replicas each (see :func:`_epoch_batches`).

    Each worker reads its own shards (:func:`_shard_shares`). An epoch takes
    the steps one device takes on the whole set, and each worker serves its
    images in that many steps, split evenly between its replicas
    (:func:`~facegrid.data.tf.split.even_batches`): every image is trained
    on once an epoch even when the workers' shards hold different numbers
    of images, and a step's global batch, the sum of the workers' shares,
    holds about ``batch_size`` images. The loss is normalised by the whole
    step's positives and batch normalisation is synchronised, so uneven
    shares train one device's objective on that global batch.
    """
    images, steps = _shard_shares(packed, readers, local), len(packed)
    log.info(
        "input pipeline: packed set split by shard between %d workers, every image once in %d steps an epoch "
        "(a worker's share of a step: %s images)",
        readers,
        steps,
        " / ".join(f"{count / steps:.1f}" for count in images),
    )

    def this_workers(context: tf.distribute.InputContext) -> tf.data.Dataset:
        share = packed.share(context.num_input_pipelines, context.input_pipeline_id)
        return share.dataset(initial_epoch + 1, config.epochs - initial_epoch, batches=steps * local)

    iterator = iter(strategy.distribute_datasets_from_function(this_workers))
    return (lambda epoch: iterator), steps, lambda: None


class SequenceEpochs:
    """A FaceSequence's epochs as distributed batches, read by Keras' own PyDataset workers.

    Called with epoch ``e``, it ends the previous epoch (stopping its
    workers), serves the order of epoch ``e + 1`` and gives an iterator over
    its batches; :meth:`close` ends the last one.
    """

    def __init__(self, sequence: FaceSequence, strategy: tf.distribute.Strategy):
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter  # what fit reads it with

        self.sequence = sequence
        self.adapter = PyDatasetAdapter(sequence, shuffle=False)
        self.data = replica_batches(strategy, self.adapter.get_tf_dataset())
        self._open = False

    def __call__(self, epoch: int):
        self.close()
        self.sequence.epoch = epoch + 1
        self.adapter.on_epoch_begin()
        self._open = True
        return iter(self.data)

    def close(self) -> None:
        """End the epoch being served, if one is."""
        if self._open:
            self.adapter.on_epoch_end()
            self._open = False


def distribution(config: Config, notice: Callable[[str], None] = log.info) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``config.strategy`` names (the default one: a single device).

    Under ``"multi-worker"``, every worker of the cluster in ``TF_CONFIG``
    must answer within ``config.cluster_wait`` seconds first
    (:func:`facegrid.scale.cluster.wait_for_cluster`; ``notice`` is told what
    is waited for).

    Raises:
        ValueError: under ``"multi-worker"``, ``TF_CONFIG`` cannot be used.
        facegrid.core.errors.ServiceError: a worker did not answer in time.
    """
    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if config.strategy == "multi-worker":
        wait_for_cluster(read_tf_config(), config.cluster_wait, notice)
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _build(config: Config) -> keras.Model:
    """:func:`~facegrid.model.network.build_detector`; a failed download of Keras' ImageNet weights told in one line."""
    try:
        return build_detector(config)
    except Exception as error:  # keras.utils.get_file raises a bare Exception over urllib's error
        cause = error if isinstance(error, urllib.error.URLError) else error.__context__
        if config.backbone_weights != "imagenet" or not isinstance(cause, urllib.error.URLError):
            raise
        raise ConnectionError(
            f"backbone_weights 'imagenet' downloads Keras' MobileNetV2 weights, which failed ({cause.reason}): "
            f"it needs internet; offline, start from the ImageNet backbone shipped with facegrid, the default "
            f"backbone_weights {BUNDLED_IMAGENET!r} with backbone_style 'torchvision' and alpha at most 1.0 "
            "(leave out --backbone-weights and --backbone-style)"
        ) from None


def _start_from(model: keras.Model, weights: list[np.ndarray], init: str) -> None:
    """Give ``model`` the ``weights`` of the facegrid model ``init`` (fine-tuning).

    Raises:
        facegrid.core.errors.PathError: ``init``'s network is not ``model``'s.
    """
    try:
        model.set_weights(weights)
    except ValueError as error:
        raise PathError(
            init,
            f"its network is not the one these settings build ({str(error).splitlines()[0]}); "
            "train with its own settings file",
        ) from None
    log.info("starting from the weights of %s", init)


def _train(
    config, strategy, train_data, face_filter, run_dir, out_dir, validation, resume, init_weights, verbose, notice
):
    """The run, reading a resumed run from ``run_dir`` and writing into ``out_dir`` (see :func:`train`).

    ``train_data``: the training batches (:func:`facegrid.data.tf.choose.pipeline_for`).
    ``validation``: None, or the validation index, its images folder, its
    ground truth and the note on it (:func:`validation_ground_truth`).
    ``resume``: continue from the run's last finished epoch (else start at
    the first, a resumed run that finished none included). ``init_weights``:
    the weights of ``config.init``, or None.
    """
    log.info(
        "strategy %s: %s, %d replica(s) in sync",
        config.strategy,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    callbacks: list[keras.callbacks.Callback] = []
    if validation is not None:
        val_index, val_images, ground_truth, note = validation
        log.info("validation: %s", note)
        callbacks.append(
            ValidationAP(
                val_index,
                val_images,
                config,
                face_filter,
                strategy.num_replicas_in_sync,
                ground_truth,
                out_dir / "panels",
            )
        )

    state = {}
    if resume:
        state = json.loads((run_dir / "state.json").read_text())
        with strategy.scope():
            model = load_detector(run_dir / "last.keras", compile=True)
        initial_epoch, best_ap = int(state["epoch"]), float(state["best_ap"])
        log.info("resuming %s after epoch %d (best val_ap %.4f)", run_dir, initial_epoch, best_ap)
        for stale in out_dir.glob("*.tmp*"):  # a checkpoint cut short when the run was killed
            log.info("removing %s, left by an interrupted save", stale.name)
            stale.unlink()
    else:
        with strategy.scope():
            model = _build(config)
            if init_weights is not None:
                _start_from(model, init_weights, config.init)
            _compile(model, config, len(train_data))
        initial_epoch, best_ap = 0, -1.0
    log.info("configuration:\n%s", config.to_toml())
    batches, steps, finish = _epoch_batches(config, strategy, train_data, initial_epoch, notice)
    early_stopping = None
    if validation is not None and config.early_stopping_patience > 0:
        early_stopping = ResumableEarlyStopping(config.early_stopping_patience, state.get("early_stopping"))
        if early_stopping.stopped:
            log.info(
                "the run stopped early after epoch %d: no better val_ap in %d epochs; nothing to train "
                "(raise early_stopping_patience to go on)",
                initial_epoch,
                early_stopping.resumed["wait"],
            )
            return model
        callbacks.append(early_stopping)
    callbacks += [
        ReportBadImages(train_data.bad_images),
        Checkpoints(out_dir, best_ap, early_stopping),
        TrainingCurves(out_dir),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs")),
    ]
    try:
        TrainingLoop(model, strategy).fit(
            batches,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps=steps,
            callbacks=callbacks,
            verbose=verbose,
        )
    except tf.errors.OpError as error:
        if config.data_service and isinstance(error, SERVICE_FAILURES):
            raise service_failure(config.data_service, error) from None
        raise TrainingError(run_dir, f"TensorFlow's {type(error).__name__}: {reason_of(error)}") from None
    finally:
        finish()
    return model
