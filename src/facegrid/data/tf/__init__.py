"""The examples of :mod:`facegrid.data` as tf.data pipelines, and packed TFRecord shards.

Owns :class:`~.pipeline.FacePipeline` (TensorFlow decodes, NumPy plans),
the pure-TensorFlow pipelines over folders and packed sets
(:mod:`.puretf`), targets in TensorFlow ops held bit for bit to the codec
(:mod:`.targets`), the packed record layout (:mod:`.records`), packing
(:mod:`.pack`) and reading a packed set back (:mod:`.packed`).

May import: :mod:`facegrid.core`, :mod:`facegrid.wider`, :mod:`facegrid.data`, TensorFlow.
"""
