"""Scoring detections: the official WIDER FACE protocol and plain AP.

Owns the protocol, its deviations and plots (:mod:`.wider`).

May import: :mod:`facegrid.core`, :mod:`facegrid.wider`, :mod:`facegrid.data`,
:mod:`facegrid.infer`. Never TensorFlow or Keras.
"""
