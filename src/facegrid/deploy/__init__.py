"""Exporting a trained detector for the formats people deploy: Keras, SavedModel, LiteRT float or int8, ONNX.

Owns :func:`~.export.export_model` and :func:`~.export.export_models` (:mod:`.export`).

May import: every part below it but :mod:`facegrid.train`; TensorFlow and Keras.
"""
