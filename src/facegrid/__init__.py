"""facegrid: stream WIDER-FACE-format datasets into Keras 3 training of tiny face detectors, and run them.

The names a user needs live here, each imported on first use, so that
``import facegrid`` loads neither TensorFlow nor Keras and the data tools
start fast: :class:`FaceSequence` and the tf.data pipelines import them when
first touched, :class:`Detector` only for a Keras model or a SavedModel.
The layout of the package, part by part, is in ``docs/architecture.md``.

Example:
    >>> import facegrid
    >>> index = facegrid.read_annotations(facegrid.sample_dataset()[0])
    >>> len(index), index.num_faces
    (4, 3)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Each public name and the module that owns it.
_OWNERS = {
    # the data, as read from the release's files
    "read_annotations": "facegrid.wider.annotations",
    "write_annotations": "facegrid.wider.annotations",
    "Index": "facegrid.wider.index",
    "FaceFilter": "facegrid.wider.index",
    "sample_dataset": "facegrid.core.resources",
    "bundled_model_path": "facegrid.core.resources",
    # settings and the target layouts
    "Config": "facegrid.core.config",
    "load_config": "facegrid.core.config",
    "GridCodec": "facegrid.core.codec",
    "PyramidCodec": "facegrid.core.codec",
    # examples and the pipelines serving them
    "Augment": "facegrid.data.augment",
    "ExampleSource": "facegrid.data.examples",
    "FaceSequence": "facegrid.data.sequence",
    "FacePipeline": "facegrid.data.tf.pipeline",
    "PureTFPipeline": "facegrid.data.tf.puretf",
    "PackedPipeline": "facegrid.data.tf.puretf",
    "pipeline_for": "facegrid.data.tf.choose",
    "pack_dataset": "facegrid.data.tf.pack",
    "check_dataset": "facegrid.data.check",
    # the model, its training and export
    "build_detector": "facegrid.model.network",
    "load_detector": "facegrid.model.network",
    "loss_for": "facegrid.model.loss",
    "PIXEL_SCALE": "facegrid.model.network",
    "PIXEL_OFFSET": "facegrid.model.network",
    "train_detector": "facegrid.train.run",
    "export_model": "facegrid.deploy.export",
    "export_models": "facegrid.deploy.export",
    # detection and its evaluation
    "Detector": "facegrid.infer.detector",
    "Detections": "facegrid.infer.detector",
    "plan_detection": "facegrid.infer.run",
    "run_detection": "facegrid.infer.run",
    "evaluate_wider": "facegrid.eval.protocol",
    "average_precision": "facegrid.eval.ap",
    "validate": "facegrid.eval.validate",
    # errors
    "FacegridError": "facegrid.core.errors",
    "AnnotationError": "facegrid.core.errors",
    "ImageError": "facegrid.core.errors",
    "PathError": "facegrid.core.errors",
}

__all__ = sorted(_OWNERS)


def __getattr__(name: str):
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'facegrid' has no attribute {name!r}")
    value = getattr(importlib.import_module(owner), name)
    globals()[name] = value  # found once, then an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNERS))
