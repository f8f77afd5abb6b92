"""Scoring detections: the official WIDER FACE protocol and plain AP, and a detector validated on WIDER val.

Owns the official protocol and its deviations (:mod:`.protocol`), the
precision/recall curve and the plain AP against any annotation file
(:mod:`.ap`), the matching both share (:mod:`.matching`), plots of the
curves (:mod:`.plots`), and the one validation that training's epochs and
the ``val`` command share (:mod:`.validate`). :mod:`.wider` only passes on
the names the command line imports from it.

May import: :mod:`facegrid.core`, :mod:`facegrid.wider`, :mod:`facegrid.data`,
:mod:`facegrid.infer`. Never TensorFlow or Keras.
"""
