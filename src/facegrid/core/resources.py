"""The files shipped inside the package: the bundled detector, the ImageNet backbone, the sample dataset.

One place says where each lies, so that the command line, training and
detection find the same files (their provenance is in ``models/`` and
``samples/README.md`` beside them).
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

#: File name of the detector bundled with facegrid, in the package's ``models/`` folder; its settings are
#: ``facegrid-wider.toml`` beside it, and its model card ``MODEL_CARD.md``.
BUNDLED_MODEL = "facegrid-wider.keras"

#: File name of the same detector exported to int8 LiteRT (``facegrid-wider.toml`` is its settings too):
#: what detection runs by default where LiteRT is installed.
BUNDLED_INT8_MODEL = "facegrid-wider.tflite"

#: File name of torchvision's ImageNet MobileNetV2 converted for Keras
#: (:mod:`facegrid.model.from_torchvision`), in ``models/``; its provenance and digests are in
#: ``mobilenet_v2_imagenet.md`` beside it.
BUNDLED_BACKBONE = "mobilenet_v2_imagenet.weights.h5"


def _package_file(*parts: str) -> Path:
    return Path(str(resources.files("facegrid").joinpath(*parts)))


def bundled_model_path() -> Path:
    """The detector shipped with facegrid, as a Keras model: what training fine-tunes and exports start from."""
    return _package_file("models", BUNDLED_MODEL)


def bundled_int8_model_path() -> Path:
    """The bundled detector as int8 LiteRT: about three times faster than through Keras, and no TensorFlow."""
    return _package_file("models", BUNDLED_INT8_MODEL)


def default_model_path() -> Path:
    """What detection runs unless given a model: the bundled int8 LiteRT model where LiteRT is installed, else
    the bundled Keras model."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        return bundled_int8_model_path()
    return bundled_model_path()


def bundled_backbone_path() -> Path:
    """The ImageNet backbone's weights training starts from by default, with nothing downloaded and no torch."""
    return _package_file("models", BUNDLED_BACKBONE)


def sample_dataset() -> tuple[Path, Path]:
    """The bundled public-domain sample dataset: its annotation file and its images folder."""
    return _package_file("samples", "faces_bbx_gt.txt"), _package_file("samples", "images")
