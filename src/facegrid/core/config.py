"""One frozen configuration for a detector and its training run, read from TOML.

Every setting has a documented default; a TOML file overrides any of them, and
command-line flags override the file. The resolved configuration is written
into each run folder and printed in its log, so a run can be repeated from it.

Example TOML::

    input_size = 224
    grid_size = 7
    alpha = 0.75  # the bundled ImageNet backbone's first channels of each layer
    epochs = 40
    learning_rate = 2e-3
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from facegrid.core.errors import SettingsError
from facegrid.core.scores import ScoreCalibration

#: Strides a pyramid level can have: where MobileNetV2 offers a feature map.
TAPS_BY_STRIDE = (8, 16, 32)

#: The choices for ``pipeline``.
PIPELINES = ("tfdata", "sequence", "puretf")

#: The pipeline of TensorFlow ops alone: the one a tf.data service can run, and the one that reads packed shards.
TF_OPS_PIPELINE = "puretf"

#: The choices for ``on_bad_image``: stop at an unusable image, or leave it out (logged, counted).
POLICIES = ("raise", "skip")

#: The choices for ``strategy``.
STRATEGIES = ("default", "mirrored", "multi-worker")

#: The choices for ``backbone_style``.
BACKBONE_STYLES = ("keras", "torchvision")

#: ``backbone_weights`` naming the ImageNet backbone shipped with facegrid
#: (:func:`facegrid.core.resources.bundled_backbone_path`): alpha 1.0, ``backbone_style`` ``"torchvision"``;
#: a narrower alpha takes its first channels of each layer (:func:`facegrid.model.backbone.narrowed`).
BUNDLED_IMAGENET = "imagenet-bundled"


#: One label of a host name: letters, digits and inner hyphens, at most 63 characters.
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def service_address(address: str) -> str:
    """``address`` of a tf.data service server as gRPC takes it: ``host:port``, without a ``grpc://`` in front.

    The host is a name, an IPv4 address or an IPv6 address in brackets
    (``[::1]:5050``); the port is 1 to 65535. Checked here, because gRPC
    takes anything and an address it cannot use only shows as a server that
    never answers.

    Raises:
        ValueError: ``address`` is not of that form.
    """
    bare = address.removeprefix("grpc://")
    host, _, port = bare.rpartition(":")
    if not (_is_host(host) and re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
        raise ValueError(
            f"expected HOST:PORT (a host name, an IPv4 address or an IPv6 address in brackets, "
            f"and a port from 1 to 65535), got {address!r}"
        )
    return bare


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return False
    if all(label.isdigit() for label in labels):  # digits and dots: an IPv4 address, or nothing
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


def check_policy(policy: str) -> str:
    """``policy`` itself, if it is one of :data:`POLICIES` (what to do with an unusable image)."""
    if policy not in POLICIES:
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {policy!r}")
    return policy


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_input_side(name: str, side: int, allow_zero: bool = False) -> None:
    """Refuse a network input side that is not a multiple of 32 (the coarsest stride), naming it ``name``."""
    if side % 32 or side < (0 if allow_zero else 32):
        raise ValueError(f"{name} must be a multiple of 32, got {side}")


def check_crop_scale(crop_scale: tuple[float, float]) -> None:
    """Refuse a ``crop_scale`` that is no range of fractions: ``0 < low <= high <= 1``.

    The setting's rule, here where the settings are checked; the augmentation
    built from it (:class:`facegrid.data.augment.Augment`) checks with it too.

    Raises:
        ValueError: ``crop_scale`` breaks the rule.
    """
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1. Received: crop_scale={crop_scale}")


@dataclass(frozen=True)
class Config:
    """Settings of the detector and of its training.

    Model (fully convolutional: trained at one input size, it runs at any multiple of 32):
        input_size: side ``S`` of the square training input, a multiple of 32.
        strides: a pyramid of grids, one per stride (:class:`facegrid.core.codec.PyramidCodec`:
            several cells per face, each face on the level of its size), increasing
            and among :data:`TAPS_BY_STRIDE`, such as ``[8, 16, 32]``; empty for a
            single grid of ``grid_size``.
        grid_size: side ``G`` of the single training output grid; ``S/32`` (the backbone's
            own resolution), ``S/16`` or ``S/8`` (upsampling head fed from an earlier
            stage); 0 with ``strides``.
        detect_size: detection input, a multiple of 32, 0 meaning ``input_size``.
            Pyramid models keep the aspect ratio: the longer side is resized to
            ``detect_size`` and the other padded to a multiple of 32.
            Single-grid models see the image stretched to a ``detect_size`` square.
        alpha: MobileNetV2 width multiplier.
        backbone_weights: ``"imagenet-bundled"`` (torchvision's ImageNet
            MobileNetV2 converted by :mod:`facegrid.model.backbone` and shipped with
            facegrid, so training starts from ImageNet features offline; it fits
            backbone_style ``"torchvision"`` and alpha 1.0, or less, whose
            layers take its first channels), ``"none"``
            (random), ``"imagenet"`` (Keras' weights, downloaded; needs
            internet and backbone_style ``"keras"``), the path of a
            ``.weights.h5`` file, or a facegrid ``.keras`` model with the same
            backbone, whose backbone's weights start training.
        backbone_style: ``"keras"`` (keras.applications.MobileNetV2) or
            ``"torchvision"`` (the same network with torchvision's padding and
            batch-norm epsilon, for weights converted from torchvision by
            :mod:`facegrid.model.backbone`).
        head_channels: width of the feature pyramid merging the backbone's
            maps and of the detection heads on it.
        init: a facegrid ``.keras`` model whose weights start training (fine-tuning,
            the bundled model's included); its network must be the one these
            settings build (``facegrid train --init`` takes its settings file
            too). Empty: the weights ``backbone_weights`` names, heads fresh.

    Data (the training examples of :mod:`facegrid.data`):
        batch_size: images a training step; under a ``strategy``, the global batch.
        augment: augment the training images (validation images never are).
        crop_scale: range of the random square crop's side as a fraction of the
            image's shorter side, when augmenting
            (:func:`facegrid.data.augment.augmentation` builds the
            :class:`~facegrid.data.augment.Augment`); ``0 < low <= high <= 1``.
        seed: seeds the image order and the augmentation of every epoch, the
            network's initial weights, the validation images drawn as panels,
            and the images an int8 export calibrates on.
        min_face_size: faces smaller than this (shorter side, original pixels) are
            not targets but ignore regions.
        pipeline: ``"tfdata"`` (:class:`facegrid.data.tf.pipeline.FacePipeline`: TensorFlow
            decodes in its own threads; the faster), ``"sequence"``
            (:class:`facegrid.FaceSequence`) or ``"puretf"``
            (:class:`facegrid.data.tf.puretf.PureTFPipeline`: TensorFlow ops only, which
            a tf.data service can run; JPEG images, grid or pyramid targets; the
            one that reads a packed set, see :meth:`check_packed`).
            All serve the same batches (:func:`facegrid.data.tf.choose.pipeline_for`
            builds the one named).
        data_service: ``host:port`` of a tf.data service dispatcher (``facegrid
            data serve``) whose workers build the training batches; needs
            ``pipeline = "puretf"``. Empty: batches are built here.
        data_service_wait: seconds training waits, before its first step, for
            the dispatcher to answer and for a worker to register with it (a
            trainer without workers would wait for data without end), and the
            seconds a worker waits for its dispatcher to answer.
        workers: images decoded at once (tfdata, puretf) or batch-building workers (sequence).
        use_multiprocessing: sequence only: worker processes instead of threads.
        on_bad_image: ``"raise"`` (stop, naming the image) or ``"skip"`` (leave
            it out, log it, count it), for training and validation images:
            see :mod:`facegrid.data.screening`.

    Devices (:mod:`facegrid.train.run`; not fixed by a run, which may resume under another):
        strategy: the ``tf.distribute`` strategy: ``"default"`` (one device),
            ``"mirrored"`` (``MirroredStrategy``: every visible GPU, or CPU) or
            ``"multi-worker"`` (``MultiWorkerMirroredStrategy``, its cluster
            and this process's task read from the ``TF_CONFIG`` environment
            variable). ``batch_size`` is the global batch, split between the
            replicas, so each step sees the same images, and optimises the
            same loss, under any strategy (:mod:`facegrid.train.loop`).
        cluster_wait: seconds a multi-worker run waits, before TensorFlow
            starts, for every other worker of its cluster to answer (TensorFlow
            would wait without end; see :mod:`facegrid.scale.cluster`).

    Optimisation:
        epochs: epochs of the whole run.
        learning_rate, warmup_epochs: AdamW's peak learning rate, reached
            over the first ``warmup_epochs`` by a linear warm-up from a
            hundredth of it (none with 0), then decayed along a cosine to 0 by
            the last epoch.
        weight_decay: AdamW decoupled weight decay.
        early_stopping_patience: stop after this many epochs without a better
            validation AP (0 disables).

    Validation (with a validation set; :class:`facegrid.train.run.ValidationAP`):
        val_ground_truth: the official WIDER FACE ``eval_tools/ground_truth``
            folder, for WIDER easy, medium and hard AP each epoch beside the
            plain one; ``""`` looks for ``eval_tools/ground_truth`` in the
            dataset folder that holds the validation annotations' folder (as
            the official release lays them out), ``"none"`` turns it off.
        panels_every: every this many epochs, draw detections and ground truth
            on a few validation images into the run folder's ``panels/`` (0 disables).

    Loss (:func:`facegrid.model.loss.loss_for`: :class:`~facegrid.model.loss.GridLoss`
    on a single grid, :class:`~facegrid.model.loss.PyramidLoss` on a pyramid):
        focal_gamma: focusing parameter of the score loss (focal loss on a single grid,
            quality focal loss on a pyramid) over every cell.
        focal_alpha: weight of face cells in a single grid's focal loss (pyramid
            scores are weighted by their IoU target instead, so it must stay at
            its default there).
        box_weight: weight of the box terms on cells holding a face.

    Detection (written into the run folder's ``config.toml`` and an exported
    model's ``.toml``, where :meth:`facegrid.infer.detector.Detector.load` and
    ``facegrid detect`` take them from; validation during training uses
    ``nms_iou`` and a 0.01 score floor, to count the whole precision-recall curve):
        score_threshold: keep detections scoring at least this.
        nms_iou: suppress boxes overlapping a better one by more than this IoU.
        score_calibration: ``[slope, offset]`` of the map from the network's raw
            scores to the scores detection reports
            (:class:`~facegrid.core.scores.ScoreCalibration`): ``[1, 0]``
            reports raw scores; a fitted one
            (:func:`facegrid.eval.calibration.fit_calibration`) reports the chance
            that a detection is a face, which ``score_threshold`` is then in.
    """

    input_size: int = 224
    strides: tuple[int, ...] = ()
    grid_size: int = 7
    detect_size: int = 0
    alpha: float = 1.0
    backbone_weights: str = BUNDLED_IMAGENET
    init: str = ""
    backbone_style: str = "torchvision"
    head_channels: int = 128

    batch_size: int = 16
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    seed: int = 0
    min_face_size: float = 0.0
    pipeline: str = "tfdata"
    data_service: str = ""
    data_service_wait: float = 60.0
    workers: int = 2
    use_multiprocessing: bool = False
    on_bad_image: str = "raise"

    strategy: str = "default"
    cluster_wait: float = 120.0

    epochs: int = 30
    learning_rate: float = 1e-3
    warmup_epochs: int = 1
    weight_decay: float = 1e-4
    early_stopping_patience: int = 10

    val_ground_truth: str = ""
    panels_every: int = 5

    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    box_weight: float = 2.0

    score_threshold: float = 0.5
    nms_iou: float = 0.4
    score_calibration: tuple[float, float] = (1.0, 0.0)

    def __post_init__(self):
        if self.strides:
            from facegrid.core.codec import PyramidCodec

            object.__setattr__(self, "strides", PyramidCodec(tuple(self.strides)).strides)  # validated, ints
            if self.grid_size:
                raise ValueError(
                    f"grid_size must be 0 with strides (a pyramid has no single grid), got {self.grid_size}"
                )
            if self.focal_alpha != Config.focal_alpha:
                raise ValueError("focal_alpha applies to single-grid models only; leave it out with strides")
            if not set(self.strides) <= set(TAPS_BY_STRIDE):
                raise ValueError(f"strides must be among {sorted(TAPS_BY_STRIDE)}. Received: strides={self.strides}")
        strides = {self.input_size // s: s for s in (32, 16, 8) if self.input_size % s == 0}
        if not self.strides and self.grid_size not in strides:
            raise ValueError(
                f"grid_size {self.grid_size} does not fit input_size {self.input_size}: "
                f"choose one of {sorted(strides)} (input_size / 32, / 16 or / 8)"
            )
        for name in ("input_size", "detect_size"):
            check_input_side(name, getattr(self, name), allow_zero=name == "detect_size")
        check_crop_scale(self.crop_scale)
        _check_choice("pipeline", self.pipeline, PIPELINES)
        if self.data_service and self.pipeline != TF_OPS_PIPELINE:
            raise ValueError(
                f"data_service needs pipeline {TF_OPS_PIPELINE!r} (the one a service can run), not {self.pipeline!r}"
            )
        if self.data_service:
            try:
                service_address(self.data_service)
            except ValueError as error:
                raise ValueError(f"data_service: {error}") from None
        if not (math.isfinite(self.data_service_wait) and self.data_service_wait > 0):
            raise ValueError(f"data_service_wait must be a positive number of seconds, got {self.data_service_wait}")
        _check_choice("strategy", self.strategy, STRATEGIES)
        if not (math.isfinite(self.cluster_wait) and self.cluster_wait > 0):
            raise ValueError(f"cluster_wait must be a positive number of seconds, got {self.cluster_wait}")
        check_policy(self.on_bad_image)
        _check_choice("backbone_style", self.backbone_style, BACKBONE_STYLES)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.panels_every < 0:
            raise ValueError(f"panels_every must be >= 0 (0 disables the panels), got {self.panels_every}")
        if len(self.score_calibration) != 2:
            raise ValueError(f"score_calibration must be [slope, offset], got {list(self.score_calibration)}")
        ScoreCalibration(*self.score_calibration)
        if self.backbone_weights == BUNDLED_IMAGENET and (self.alpha > 1.0 or self.backbone_style != "torchvision"):
            asked = " with ".join(
                [f"alpha {self.alpha}"] * (self.alpha > 1.0)
                + [f"backbone_style {self.backbone_style!r}"] * (self.backbone_style != "torchvision")
            )
            raise ValueError(
                f"backbone_weights {BUNDLED_IMAGENET!r} (the default: the ImageNet backbone shipped with facegrid) "
                f"fits alpha 1.0 or less with backbone_style 'torchvision' only, not {asked}: for {asked}, start "
                "from random weights with backbone_weights 'none'; for ImageNet features, "
                "keep alpha at most 1.0 and backbone_style 'torchvision'"
            )
        if self.backbone_style == "torchvision" and self.backbone_weights == "imagenet":
            raise ValueError(
                "backbone_weights 'imagenet' (Keras' weights, downloaded) fit backbone_style 'keras' only: "
                "set backbone_style 'keras' with them, or keep the default "
                f"backbone_weights {BUNDLED_IMAGENET!r}, ImageNet features shipped with facegrid"
            )

    def check_packed(self) -> None:
        """Refuse to train from a packed set (``facegrid data pack``) unless these settings' pipeline reads one.

        A packed set's images are bytes in its shards, which only
        :data:`TF_OPS_PIPELINE` reads.

        Raises:
            ValueError: ``pipeline`` is another.
        """
        if self.pipeline != TF_OPS_PIPELINE:
            raise ValueError(f"a packed training set is read by pipeline {TF_OPS_PIPELINE!r}, not {self.pipeline!r}")

    @property
    def codec(self):
        """The model's target layout: a :class:`~.codec.PyramidCodec` or a :class:`~.codec.GridCodec`."""
        from facegrid.core.codec import codec_for

        return codec_for(self.strides, self.grid_size)

    @property
    def calibration(self) -> ScoreCalibration:
        """The map from the network's raw scores to reported ones (``score_calibration``)."""
        return ScoreCalibration(*self.score_calibration)

    @property
    def detection_input_size(self) -> int:
        """Side of the square input at detection time."""
        return self.detect_size or self.input_size

    def replace(self, **changes) -> Config:
        """A copy with some settings changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_toml(self) -> str:
        return tomli_w.dumps(dataclasses.asdict(self))

    def save(self, path: str | os.PathLike) -> None:
        """Write the settings as TOML, atomically."""
        from facegrid.core.files import write_text_atomically

        write_text_atomically(path, self.to_toml())


def settings_path(model: str | os.PathLike) -> Path:
    """Where a model's own settings file lies: ``NAME.toml`` beside ``NAME.keras`` (or a SavedModel folder ``NAME``)."""
    model = Path(model)
    return model.with_suffix(".toml") if model.suffix else model.with_name(model.name + ".toml")


def model_settings_file(model: str | os.PathLike) -> Path | None:
    """A model's settings file: :func:`settings_path`, else its run folder's ``config.toml``; None if neither."""
    model = Path(model)
    return next((p for p in (settings_path(model), model.parent / "config.toml") if p.is_file()), None)


def model_config(model: str | os.PathLike) -> Config | None:
    """The settings saved with a model (:func:`model_settings_file`); None for a bare model.

    Raises:
        facegrid.core.errors.SettingsError: the settings file is not a valid configuration.
    """
    found = model_settings_file(model)
    return None if found is None else load_config(found)


def load_config(path: str | os.PathLike | None = None, **overrides) -> Config:
    """Read a TOML file (or start from the defaults) and apply ``overrides``.

    Raises:
        facegrid.core.errors.SettingsError: the file cannot be read, is not
            TOML, or holds unknown keys, wrong types or inconsistent settings
            (the overrides included, when they are at fault with it).
        ValueError: without a file, the overrides are not sound settings.
    """
    values = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(path, f"not valid TOML: {error}") from None
        except UnicodeDecodeError:
            raise SettingsError(path, "not UTF-8 text") from None
        except OSError as error:
            raise SettingsError(path, f"cannot read: {error.strerror or error}") from None
    known = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(path, f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name, value in values.items():
        expected = type(getattr(Config(), name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif expected is tuple and isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            values[name] = tuple(float(v) for v in value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SettingsError(path, f"{name} must be {expected.__name__}, got {value!r}")
    try:
        config = Config(**values)
    except ValueError as error:
        raise SettingsError(path, str(error)) from None
    try:
        return config.replace(**overrides)
    except ValueError as error:
        if path is None:
            raise
        given = ", ".join(f"{k} = {v!r}" for k, v in overrides.items() if v is not None)
        raise SettingsError(path, f"{error} (with {given})") from None
