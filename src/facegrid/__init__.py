"""facegrid: stream WIDER-FACE-format datasets into Keras 3 training of tiny grid face detectors.

The annotation reader and the codecs load without TensorFlow, so data tools
start fast; :class:`FaceSequence` imports Keras on first use.
"""

from facegrid.core.codec import GridCodec, PyramidCodec
from facegrid.core.errors import AnnotationError
from facegrid.wider.annotations import read_annotations, write_annotations
from facegrid.wider.index import FaceFilter, Index

__all__ = [
    "AnnotationError",
    "FaceFilter",
    "FaceSequence",
    "GridCodec",
    "Index",
    "PyramidCodec",
    "read_annotations",
    "write_annotations",
]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "FaceSequence":
        from facegrid.data.sequence import FaceSequence

        return FaceSequence
    raise AttributeError(f"module 'facegrid' has no attribute {name!r}")
