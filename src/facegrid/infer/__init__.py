"""Detection: images, frames and videos in, face boxes in original-image pixels out.

Owns :class:`~.detector.Detector` (:mod:`.detector`), the runtimes of
exported models (:mod:`.runtimes`: LiteRT and ONNX Runtime without
TensorFlow), the inputs a detection run reads and the names of what it
writes (:mod:`.inputs`), and videos (:mod:`.video`).

May import: :mod:`facegrid.core`, :mod:`facegrid.wider`, :mod:`facegrid.data`,
and :mod:`facegrid.model` only where a Keras model is loaded. TensorFlow
only for a SavedModel.
"""
